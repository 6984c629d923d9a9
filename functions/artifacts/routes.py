"""Every HTTP route the artifacts function serves: (method, path prefix, handler(request, ctx))."""
from functions.artifacts import admin, handler, kpis_api, uploads
from shared import oauth

ROUTES = [
    *handler.ROUTES,
    *kpis_api.ROUTES,
    *admin.ROUTES,
    *uploads.ROUTES,
    *oauth.ROUTES,  # GET /oauth/callback, POST /oauth/device[/{deviceId}]
]
