"""A test peer speaking the subset of the Kubernetes Secrets API (core/v1) that
`shared.security.secrets.KubernetesSecretStore` uses, over TLS with a bearer token — as the API server
answers a pod's service account:

    GET   /api/v1/namespaces/{ns}/secrets/{name}          200 Secret | 404 Status
    POST  /api/v1/namespaces/{ns}/secrets                 201 Secret | 409 Status (exists)
    PATCH /api/v1/namespaces/{ns}/secrets/{name}          application/merge-patch+json (RFC 7386):
                                                          200 Secret | 404 Status | 415 other types

Every request needs `Authorization: Bearer <token>` (401 Status otherwise), and the data values
must be base64 (400 otherwise), as the real server insists. `rotate(new)` makes the peer accept
only the new token from then on, as the API server does once a projected token has expired.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import json
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PATH_RE = re.compile(r"^/api/v1/namespaces/(?P<ns>[a-z0-9-]+)/secrets(?:/(?P<name>[a-z0-9.-]+))?$")


def make_ca_and_server_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for `host` signed by it: (ca.crt, tls.crt, tls.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test kubernetes CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.crt", directory / "tls.crt", directory / "tls.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}


class SecretsPeer:
    def __init__(self, certs: Path, token: str):
        self.token = token
        self.secrets: dict[tuple[str, str], dict] = {}
        self.requests: list[tuple[str, str, str]] = []  # (method, path, content type)
        self.tokens: list[str] = []  # the bearer token of each request, in order
        self.lock = threading.Lock()
        ca, crt, key = make_ca_and_server_cert(certs)
        self.ca = ca
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                auth = self.headers.get("Authorization") or ""
                with peer.lock:
                    peer.requests.append((self.command, self.path, self.headers.get("Content-Type", "")))
                    peer.tokens.append(auth.removeprefix("Bearer "))
                    token = peer.token
                if auth != f"Bearer {token}":
                    return self._send(401, _status(401, "Unauthorized", "Unauthorized"))
                match = PATH_RE.fullmatch(self.path)
                if not match:
                    return self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))
                ns, name = match["ns"], match["name"]
                with peer.lock:
                    return self._send(*peer.apply(self.command, ns, name, raw, self.headers.get("Content-Type", "")))

            do_GET = do_POST = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(crt, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def apply(self, method: str, ns: str, name: str | None, raw: bytes, content_type: str) -> tuple[int, dict]:
        if method == "GET" and name:
            secret = self.secrets.get((ns, name))
            return (200, secret) if secret else (404, _status(404, "NotFound", f'secrets "{name}" not found'))
        if method == "POST" and not name:
            body = json.loads(raw)
            name = body.get("metadata", {}).get("name", "")
            if (ns, name) in self.secrets:
                return 409, _status(409, "AlreadyExists", f'secrets "{name}" already exists')
            problem = _check_data(body.get("data") or {})
            if problem:
                return 400, _status(400, "BadRequest", problem)
            secret = {"kind": "Secret", "apiVersion": "v1", "type": body.get("type", "Opaque"),
                      "metadata": {**body["metadata"], "namespace": ns}, "data": dict(body.get("data") or {})}
            self.secrets[(ns, name)] = secret
            return 201, secret
        if method == "PATCH" and name:
            if content_type.split(";")[0].strip() != "application/merge-patch+json":
                return 415, _status(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}")
            secret = self.secrets.get((ns, name))
            if secret is None:
                return 404, _status(404, "NotFound", f'secrets "{name}" not found')
            patch = json.loads(raw)
            problem = _check_data({k: v for k, v in (patch.get("data") or {}).items() if v is not None})
            if problem:
                return 400, _status(400, "BadRequest", problem)
            merged = _merge(secret, patch)
            merged.setdefault("data", {})
            self.secrets[(ns, name)] = merged
            return 200, merged
        return 405, _status(405, "MethodNotAllowed", f"{method} is not supported here")

    def rotate(self, token: str) -> None:
        with self.lock:
            self.token = token

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _check_data(data: dict) -> str | None:
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError):
            return f"Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data for key {key!r}"
    return None


def _merge(target, patch):
    """JSON merge patch (RFC 7386)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result
