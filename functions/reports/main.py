"""functions-framework entry point: `functions-framework --source functions/reports/main.py --target http`."""
import functions_framework

from functions.reports import bounded
from functions.reports.handler import FUNCTION, handle
from shared.httpfn import FunctionApp

app = FunctionApp(FUNCTION, handle)

if app.strict_startup():
    app.startup_check()

# One child per report engine imports it now and another after each report, so a job's
# reports do not wait for seconds of imports (functions/reports/bounded.py).
bounded.warm_up(keep=True)


@functions_framework.http
def http(request):
    return app(request)
