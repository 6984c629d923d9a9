"""functions-framework entry point: `functions-framework --source functions/reports/main.py --target http`."""
import functions_framework

from functions.reports.handler import FUNCTION, handle
from shared.httpfn import FunctionApp

app = FunctionApp(FUNCTION, handle)

if app.strict_startup():
    app.startup_check()


@functions_framework.http
def http(request):
    return app(request)
