"""functions-framework entry point: `functions-framework --source functions/sync/main.py --target http`."""
from functions.sync.handler import FUNCTION, handle
import functions_framework

from shared.httpfn import FunctionApp

app = FunctionApp(FUNCTION, handle)


@functions_framework.http
def http(request):
    return app(request)
