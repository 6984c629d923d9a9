"""Per-tenant secrets (OAuth tokens, source passwords): never in events, logs, job documents or
artifacts — those carry a reference (`secret://<name>`) at most.

Backends:
- `local` (embedded and stack): one Fernet-encrypted JSON file per tenant under
  `<UDB_HOME>/secrets/`, key from `UDB_SECRET_KEY` or a 0600 key file created beside them.
- `kubernetes` (cluster): one Secret per tenant, `udb-tenant-<t>`, through the API server with
  the pod's service account (the Role in knative/ allows get/create/patch on those).
"""
from __future__ import annotations

import base64
import json
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from shared.core.errors import InputError, NotFound, TransientError
from shared.core.tenancy import validate_tenant

if TYPE_CHECKING:
    import httpx  # imported where used: only the kubernetes store needs it

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
REF_PREFIX = "secret://"


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InputError(f"invalid secret name {name!r}: expected 1-63 of a-z, 0-9, '.', '_', '-'")
    return name


def ref(name: str) -> str:
    return REF_PREFIX + validate_name(name)


def key_problem(key: str) -> str | None:
    """What is wrong with a UDB_SECRET_KEY, or None: checked when a function starts, not when
    its first secret is read."""
    if not key:
        return None  # the local store makes its own key file
    from cryptography.fernet import Fernet
    try:
        Fernet(key.encode())
    except ValueError:
        return "expected a url-safe base64 Fernet key of 32 bytes"
    return None


class SecretStore(Protocol):
    def put(self, tenant: str, name: str, value: str) -> None: ...
    def get(self, tenant: str, name: str) -> str: ...
    def delete(self, tenant: str, name: str) -> None: ...
    def names(self, tenant: str) -> list[str]: ...


class LocalSecretStore:
    def __init__(self, root: Path, key: str = ""):
        from cryptography.fernet import Fernet

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not key:
            key_file = self.root / ".key"
            if not key_file.exists():
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(Fernet.generate_key())
            key = key_file.read_text().strip()
        try:
            self._fernet = Fernet(key.encode() if isinstance(key, str) else key)
        except ValueError:
            raise InputError("UDB_SECRET_KEY: expected a url-safe base64 Fernet key of 32 bytes") from None
        self._lock = threading.Lock()

    def _path(self, tenant: str) -> Path:
        return self.root / f"{validate_tenant(tenant)}.enc"

    def _read(self, tenant: str) -> dict:
        from cryptography.fernet import InvalidToken

        path = self._path(tenant)
        if not path.exists():
            return {}
        try:
            return json.loads(self._fernet.decrypt(path.read_bytes()))
        except InvalidToken:
            raise TransientError(f"secrets of tenant {tenant} cannot be decrypted with this key") from None

    def _write(self, tenant: str, values: dict) -> None:
        path = self._path(tenant)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self._fernet.encrypt(json.dumps(values).encode()))
        os.replace(tmp, path)

    def put(self, tenant: str, name: str, value: str) -> None:
        with self._lock:
            values = self._read(tenant)
            values[validate_name(name)] = value
            self._write(tenant, values)

    def get(self, tenant: str, name: str) -> str:
        values = self._read(tenant)
        try:
            return values[validate_name(name)]
        except KeyError:
            raise NotFound(f"no secret {name!r} for tenant {tenant}") from None

    def delete(self, tenant: str, name: str) -> None:
        with self._lock:
            values = self._read(tenant)
            if values.pop(validate_name(name), None) is not None:
                self._write(tenant, values)

    def names(self, tenant: str) -> list[str]:
        return sorted(self._read(tenant))


class KubernetesSecretStore:
    """Secrets through the Kubernetes API with the pod's service account token.

    The token is a projected volume the kubelet rotates (about hourly; the old one stops working
    soon after), and the CA bundle can be rotated too: both files are checked before every
    request (one stat each) and re-read when they changed (modification time, size, inode: the
    kubelet swaps a symlink). A 401 re-reads the token once more and retries, for a change the
    stat could not see (same size and second)."""

    SA = Path("/var/run/secrets/kubernetes.io/serviceaccount")

    def __init__(self, namespace: str | None = None, api: str = "https://kubernetes.default.svc"):
        self.api = api
        self.namespace = namespace or (self.SA / "namespace").read_text().strip()
        self._lock = threading.Lock()
        self._token = ""
        self._token_stamp: tuple | None = None
        self._http: httpx.Client | None = None
        self._ca_stamp: tuple | None = None
        self._refresh(force=True)

    @staticmethod
    def _stamp(path: Path) -> tuple:
        info = path.stat()  # follows the kubelet's ..data symlink
        return info.st_mtime_ns, info.st_size, info.st_ino

    def _refresh(self, force: bool = False):
        """The HTTP client, with the token and CA bundle re-read when their files changed."""
        import ssl

        import httpx

        with self._lock:
            token_path, ca_path = self.SA / "token", self.SA / "ca.crt"
            stamp = self._stamp(token_path)
            if force or stamp != self._token_stamp:
                self._token, self._token_stamp = token_path.read_text().strip(), stamp
            stamp = self._stamp(ca_path)
            if force or self._http is None or stamp != self._ca_stamp:
                old = self._http
                self._http = httpx.Client(base_url=self.api, verify=ssl.create_default_context(cafile=str(ca_path)),
                                          timeout=10)
                self._ca_stamp = stamp
                if old is not None:
                    old.close()
            return self._http, self._token

    def close(self) -> None:
        """Close the HTTP client (a function's lifecycle stop)."""
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def _request(self, method: str, url: str, **kwargs):
        headers = dict(kwargs.pop("headers", None) or {})
        http, token = self._refresh()
        response = http.request(method, url, headers={**headers, "Authorization": f"Bearer {token}"}, **kwargs)
        if response.status_code == 401:
            http, fresh = self._refresh(force=True)
            if fresh != token:
                response = http.request(method, url, headers={**headers, "Authorization": f"Bearer {fresh}"},
                                        **kwargs)
        return response

    def _url(self, tenant: str) -> str:
        return f"/api/v1/namespaces/{self.namespace}/secrets/udb-tenant-{validate_tenant(tenant)}"

    def _data(self, tenant: str) -> dict:
        response = self._request("GET", self._url(tenant))
        if response.status_code == 404:
            return {}
        if response.status_code >= 300:
            raise TransientError(f"kubernetes secrets: {response.status_code} reading tenant {tenant}")
        return {k: base64.b64decode(v).decode() for k, v in (response.json().get("data") or {}).items()}

    def put(self, tenant: str, name: str, value: str) -> None:
        patch = {"data": {validate_name(name): base64.b64encode(value.encode()).decode()}}
        response = self._request("PATCH", self._url(tenant), json=patch,
                                 headers={"Content-Type": "application/merge-patch+json"})
        if response.status_code == 404:
            body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": f"udb-tenant-{tenant}", "labels": {"udb.dev/tenant": tenant}}, **patch}
            response = self._request("POST", f"/api/v1/namespaces/{self.namespace}/secrets", json=body)
        if response.status_code >= 300:
            raise TransientError(f"kubernetes secrets: {response.status_code} writing tenant {tenant}")

    def get(self, tenant: str, name: str) -> str:
        try:
            return self._data(tenant)[validate_name(name)]
        except KeyError:
            raise NotFound(f"no secret {name!r} for tenant {tenant}") from None

    def delete(self, tenant: str, name: str) -> None:
        patch = {"data": {validate_name(name): None}}
        response = self._request("PATCH", self._url(tenant), json=patch,
                                 headers={"Content-Type": "application/merge-patch+json"})
        if response.status_code not in (200, 404):
            raise TransientError(f"kubernetes secrets: {response.status_code} deleting from tenant {tenant}")

    def names(self, tenant: str) -> list[str]:
        return sorted(self._data(tenant))


def open_secrets(settings) -> SecretStore:
    if settings.secrets_backend == "kubernetes":
        # A namespace that holds only tenant Secrets lets the Role cover exactly those.
        return KubernetesSecretStore(settings.secrets_namespace or settings.namespace)
    return LocalSecretStore(Path(settings.home) / "secrets", settings.secret_key)
