"""Every HTTP route the artifacts function serves: (method, path prefix, handler(request, ctx))."""
from functions.artifacts import admin, handler, kpis_api, redrive, schedules_api, signed_links, uploads
from shared.sources import oauth

ROUTES = [
    *handler.ROUTES,
    *signed_links.ROUTES,  # GET /s/{token}/artifact/{jobId}/[name]: a signed report link
    *kpis_api.ROUTES,
    *admin.ROUTES,
    *redrive.ROUTES,  # POST /admin/redrive: resume jobs that waited out an outage
    *uploads.ROUTES,
    *schedules_api.ROUTES,  # PUT/GET/DELETE /sources/{id}/schedule, POST /admin/schedules/tick
    *oauth.ROUTES,  # GET /oauth/callback, POST /oauth/device[/{deviceId}]
]
