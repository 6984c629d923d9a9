"""functions-framework entry point: `functions-framework --source functions/artifacts/main.py --target http`."""
from functions.artifacts.handler import FUNCTION, ROUTES
import functions_framework

from shared.httpfn import FunctionApp

app = FunctionApp(FUNCTION, routes=ROUTES)


@functions_framework.http
def http(request):
    return app(request)
