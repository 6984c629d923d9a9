"""functions-framework entry point: `functions-framework --source functions/artifacts/main.py --target http`."""
import functions_framework

from functions.artifacts import deadletters
from functions.artifacts.handler import FUNCTION
from functions.artifacts.routes import ROUTES
from shared.core.settings import Settings
from shared.serving.httpfn import FunctionApp

# Its CloudEvent entry takes dead letters (see deadletters.py); the rest is HTTP routes.
app = FunctionApp(FUNCTION, deadletters.handle, routes=ROUTES, settings=Settings.from_env())

if app.strict_startup():
    app.startup_check()


@functions_framework.http
def http(request):
    return app(request)
