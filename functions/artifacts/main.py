"""functions-framework entry point: `functions-framework --source functions/artifacts/main.py --target http`."""
import functions_framework

from functions.artifacts import deadletters
from functions.artifacts.handler import FUNCTION
from functions.artifacts.routes import ROUTES
from shared.core.settings import Settings
from shared.serving.httpfn import FunctionApp

# Its CloudEvent entry takes dead letters (see deadletters.py); the rest is HTTP routes.
# Started here, before functions-framework binds the port: bad configuration exits with status 1.
app = FunctionApp(FUNCTION, deadletters.handle, routes=ROUTES).serve(Settings.from_env)


@functions_framework.http
def http(request):
    return app(request)
