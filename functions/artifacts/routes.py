"""Every HTTP route the artifacts function serves: (method, path prefix, handler(request, ctx))."""
from functions.artifacts import admin, handler, kpis_api, redrive, signed_links, uploads
from shared import oauth

ROUTES = [
    *handler.ROUTES,
    *signed_links.ROUTES,  # GET /s/{token}/artifact/{jobId}/[name]: a signed report link
    *kpis_api.ROUTES,
    *admin.ROUTES,
    *redrive.ROUTES,  # POST /admin/redrive: resume jobs that waited out an outage
    *uploads.ROUTES,
    *oauth.ROUTES,  # GET /oauth/callback, POST /oauth/device[/{deviceId}]
]
