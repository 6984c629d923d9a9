"""A local OAuth 2.0 authorization server built with authlib (its Flask integration), served by
werkzeug on a free port in a thread: `OAuthPeer().start()`.

It plays both providers UDB talks to, each with its own registered client:
    Microsoft identity platform v2 style, under /ms:  /ms/authorize, /ms/token, /ms/devicecode
    Google style:  /google/auth, /google/token, /google/device/code
    /device?user_code=...   the verification page a user opens (approves for the test user,
                            or denies when `consent == "deny"`)

Grants: authorization code with PKCE (S256 required), refresh_token (rotating: each refresh
issues a new refresh token and revokes the old), and the device code grant (RFC 8628:
authorization_pending, slow_down when polled faster than `device_interval`, expired_token,
access_denied). Consent is given at once for the test user (`consent = "approve"`), or
refused (`"deny"`: the redirect carries error=access_denied).

Knobs: `access_ttl` (seconds an access token lives, short so refresh is exercised),
`device_interval`, `device_expires`, `revoke_refresh_tokens()`. Counters: `grants` (tokens
issued, by grant type), `token_calls` (every token-endpoint call, by grant type, errors too),
`authorize_requests` (the query of every authorization request). The API peers check bearer
tokens with `valid(token, client_id)`.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.models import ClientMixin, TokenMixin
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc8628 import DeviceAuthorizationEndpoint, DeviceCodeGrant, DeviceCredentialDict
from authlib.common.security import generate_token
from flask import Flask, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

MS_CLIENT, GOOGLE_CLIENT = "ms-client", "google-client"
GOOGLE_SECRET = "google-secret-4242"
TEST_USER = "ada@example.test"


class QuietHandler(WSGIRequestHandler):
    """No request log: a request line carries codes and states."""

    def log_request(self, *args, **kwargs):
        pass


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str | None
    scopes: set
    redirect_uris: set = field(default_factory=set)
    grant_types: tuple = ("authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code")

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return next(iter(self.redirect_uris), None)

    def get_allowed_scope(self, scope):
        return " ".join(s for s in (scope or "").split() if s in self.scopes)

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret):
        return self.client_secret is not None and client_secret == self.client_secret

    def check_endpoint_auth_method(self, method, endpoint):
        if endpoint == "device_authorization":
            return method == "client_id_only"
        if self.client_secret is None:
            return method == "none"  # a public client: PKCE only
        return method in ("client_secret_post", "client_secret_basic")

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type in self.grant_types


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope


@dataclass
class Grant(TokenMixin):
    """What a refresh token stands for."""
    client_id: str
    scope: str
    user: str
    revoked: bool = False

    def check_client(self, client):
        return client.client_id == self.client_id

    def get_scope(self):
        return self.scope

    def get_user(self):
        return self.user

    def is_revoked(self):
        return self.revoked


class ThreadedPeer:
    """A Flask app served by werkzeug on a free port, in a daemon thread."""

    name = "peer"

    def _serve(self, app: Flask, host: str, port: int) -> None:
        self.app = app
        self.server = make_server(host, port, app, threaded=True, request_handler=QuietHandler)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self):
        self.thread = threading.Thread(target=self.server.serve_forever, name=self.name, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def bearer_of(req) -> str:
    scheme, _, token = (req.headers.get("Authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class OAuthPeer(ThreadedPeer):
    name = "oauth-peer"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, access_ttl: int = 3600,
                 device_interval: int = 1, device_expires: int = 600):
        self.access_ttl, self.device_interval, self.device_expires = access_ttl, device_interval, device_expires
        self.consent = "approve"
        self.clients = {MS_CLIENT: Client(MS_CLIENT, None, {"Files.Read.All", "offline_access"}),
                        GOOGLE_CLIENT: Client(GOOGLE_CLIENT, GOOGLE_SECRET,
                                              {"https://www.googleapis.com/auth/drive.readonly"})}
        self.codes: dict[str, AuthCode] = {}
        self.access: dict[str, dict] = {}        # access token -> {client_id, scope, user, expires_at}
        self.refresh: dict[str, Grant] = {}      # refresh token -> its grant
        self.devices: dict[str, DeviceCredentialDict] = {}
        self.user_grants: dict[str, tuple[str, bool]] = {}
        self.last_poll: dict[str, float] = {}
        self.grants: Counter = Counter()
        self.token_calls: Counter = Counter()
        self.authorize_requests: list[dict] = []
        self.lock = threading.RLock()
        self._serve(self._app(), host, port)

    # ------------------------------------------------------------ what tests and API peers use

    def allow_redirect(self, uri: str) -> None:
        for client in self.clients.values():
            client.redirect_uris.add(uri)

    def valid(self, token: str, client_id: str) -> bool:
        with self.lock:
            entry = self.access.get(token)
            return bool(entry) and entry["client_id"] == client_id and entry["expires_at"] > time.time()

    def issued_tokens(self) -> list[str]:
        """Every access and refresh token ever issued (for leak checks)."""
        with self.lock:
            return [*self.access, *self.refresh]

    def revoke_refresh_tokens(self) -> None:
        with self.lock:
            for grant in self.refresh.values():
                grant.revoked = True

    def expire_access_tokens(self) -> None:
        with self.lock:
            for entry in self.access.values():
                entry["expires_at"] = 0

    def approve(self, user_code: str, approved: bool = True) -> None:
        with self.lock:
            self.user_grants[user_code] = (TEST_USER, approved)

    # ------------------------------------------------------------ the server

    def _app(self) -> Flask:
        peer = self
        app = Flask("oauth-peer")

        def query_client(client_id):
            return peer.clients.get(client_id)

        def save_token(token, req):
            with peer.lock:
                peer.access[token["access_token"]] = {"client_id": req.client.client_id, "scope": token.get("scope", ""),
                                                      "user": req.user,
                                                      "expires_at": time.time() + int(token["expires_in"])}
                if token.get("refresh_token"):
                    peer.refresh[token["refresh_token"]] = Grant(req.client.client_id, token.get("scope", ""), req.user)
                peer.grants[req.payload.grant_type] += 1

        server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
        server.register_token_generator("default", BearerTokenGenerator(
            lambda **kw: generate_token(42), lambda **kw: generate_token(48),
            lambda client, grant_type: peer.access_ttl))

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

            def save_authorization_code(self, code, req):
                data = req.payload.data
                with peer.lock:
                    peer.codes[code] = AuthCode(code, req.client.client_id, req.payload.redirect_uri,
                                                req.payload.scope, req.user, data.get("code_challenge"),
                                                data.get("code_challenge_method"), time.time() + 300)

            def query_authorization_code(self, code, client):
                with peer.lock:
                    item = peer.codes.get(code)
                if item and item.client_id == client.client_id and item.expires_at > time.time():
                    return item
                return None

            def delete_authorization_code(self, item):
                with peer.lock:
                    peer.codes.pop(item.code, None)

            def authenticate_user(self, item):
                return item.user

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
            INCLUDE_NEW_REFRESH_TOKEN = True

            def authenticate_refresh_token(self, refresh_token):
                with peer.lock:
                    grant = peer.refresh.get(refresh_token)
                return grant if grant and not grant.revoked else None

            def authenticate_user(self, grant):
                return grant.user

            def revoke_old_credential(self, grant):
                grant.revoked = True

        class DeviceGrant(DeviceCodeGrant):
            def query_device_credential(self, device_code):
                with peer.lock:
                    return peer.devices.get(device_code)

            def query_user_grant(self, user_code):
                with peer.lock:
                    return peer.user_grants.get(user_code)

            def should_slow_down(self, credential):
                now = time.time()
                with peer.lock:
                    last = peer.last_poll.get(credential["device_code"])
                    peer.last_poll[credential["device_code"]] = now
                return last is not None and now - last < peer.device_interval

        def client_id_only(query_client, req):
            return query_client(req.payload.client_id)

        # As at Google and Microsoft, the device endpoint takes the client id alone (a confidential
        # client authenticates later, at the token endpoint).
        server.register_client_auth_method("client_id_only", client_id_only)

        class DeviceEndpoint(DeviceAuthorizationEndpoint):
            CLIENT_AUTH_METHODS = ["client_id_only"]

            def create_endpoint_response(self, req):
                self.INTERVAL, self.EXPIRES_IN = peer.device_interval, peer.device_expires
                return super().create_endpoint_response(req)

            def get_verification_uri(self):
                return f"{peer.url}/device"

            def save_device_credential(self, client_id, scope, data):
                with peer.lock:
                    peer.devices[data["device_code"]] = DeviceCredentialDict(
                        client_id=client_id, scope=scope, expires_at=time.time() + data["expires_in"], **data)

        server.register_grant(CodeGrant, [CodeChallenge(required=True)])
        server.register_grant(RefreshGrant)
        server.register_grant(DeviceGrant)
        server.register_endpoint(DeviceEndpoint(server))

        def authorize():
            with peer.lock:
                peer.authorize_requests.append(dict(request.args))
            try:
                grant = server.get_consent_grant(end_user=TEST_USER)
            except OAuth2Error as error:  # no redirect to an unregistered URI: show the error
                return jsonify(error=error.error, error_description=error.description), 400
            user = TEST_USER if peer.consent == "approve" else None  # None: access_denied
            return server.create_authorization_response(grant=grant, grant_user=user)

        def token():
            with peer.lock:
                peer.token_calls[request.form.get("grant_type", "?")] += 1
            return server.create_token_response()

        def device_authorization():
            return server.create_endpoint_response(DeviceAuthorizationEndpoint.ENDPOINT_NAME)

        def verification_page():
            code = request.args.get("user_code", "")
            with peer.lock:
                known = any(d["user_code"] == code for d in peer.devices.values())
            if not known:
                return "unknown code", 404
            peer.approve(code, approved=peer.consent == "approve")
            return f"{'approved' if peer.consent == 'approve' else 'denied'} for {TEST_USER}", 200

        for prefix, names in (("/ms", ("authorize", "token", "devicecode")),
                              ("/google", ("auth", "token", "device/code"))):
            app.add_url_rule(f"{prefix}/{names[0]}", f"{prefix}-authorize", authorize, methods=["GET"])
            app.add_url_rule(f"{prefix}/{names[1]}", f"{prefix}-token", token, methods=["POST"])
            app.add_url_rule(f"{prefix}/{names[2]}", f"{prefix}-device", device_authorization, methods=["POST"])
        app.add_url_rule("/device", "device-page", verification_page, methods=["GET"])
        return app
