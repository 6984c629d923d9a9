"""functions-framework entry point: `functions-framework --source functions/writer/main.py --target http`."""
import functions_framework

from functions.writer.handler import FUNCTION, handle, prepare
from shared.core.settings import Settings
from shared.serving.httpfn import FunctionApp

# Started here, before functions-framework binds the port: bad configuration exits with status 1.
app = FunctionApp(FUNCTION, handle, prepare=prepare).serve(Settings.from_env)


@functions_framework.http
def http(request):
    return app(request)
