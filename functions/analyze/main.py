"""functions-framework entry point: `functions-framework --source functions/analyze/main.py --target http`."""
import functions_framework

from functions.analyze.handler import FUNCTION, handle
from shared.core.settings import Settings
from shared.serving.httpfn import FunctionApp

app = FunctionApp(FUNCTION, handle, settings=Settings.from_env())

if app.strict_startup():
    app.startup_check()


@functions_framework.http
def http(request):
    return app(request)
