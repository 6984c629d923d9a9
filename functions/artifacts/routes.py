"""Every HTTP route the artifacts function serves: (method, path prefix, handler(request, ctx))."""
from functions.artifacts import handler

ROUTES = [
    *handler.ROUTES,
]
