"""functions-framework entry point: `functions-framework --source functions/reports/main.py --target http`."""
import os

import functions_framework

from functions.reports import bounded
from functions.reports.handler import FUNCTION, handle
from shared.core.settings import Settings
from shared.serving.httpfn import FunctionApp

app = FunctionApp(FUNCTION, handle, settings=Settings.from_env())

if app.strict_startup():
    app.startup_check()

_warm_in_pid = None


@functions_framework.http
def http(request):
    # One child per report engine imports it ahead, and another after each report, so a job's
    # reports do not wait seconds for imports (functions/reports/bounded.py). Started by the
    # first request (the probes come first) in the process that serves: gunicorn imports this
    # module in its master and forks the worker, which could not use the master's children.
    global _warm_in_pid
    if _warm_in_pid != os.getpid():
        _warm_in_pid = os.getpid()
        bounded.warm_up(keep=True)
    return app(request)
