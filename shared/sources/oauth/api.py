"""GET requests to a provider's API (Graph, Drive) with the tenant's bearer token."""
from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from shared.core.errors import SourceError
from shared.security import netguard
from shared.sources.oauth.tokens import Tokens

MAX_LISTING_BYTES = 16 * 1024 * 1024


class ApiSession:
    """GET requests to a provider's API (Graph, Drive) with the tenant's bearer token, through
    the SSRF guard: 429 (Retry-After) and 5xx retried with backoff as the other web sources do,
    one refresh and retry when the API answers 401, redirects followed hop by hop (the token is
    not sent to another host: a download URL is pre-authenticated), and errors that say what
    the provider said."""

    def __init__(self, env, source_provider: str, base_url: str, *, sleep=time.sleep):
        from shared.sources import http as web

        self.web = web
        self.source_provider = source_provider
        self.tokens = Tokens.of_env(env, source_provider.split("/")[0])
        self.base = base_url.rstrip("/")
        self.env = env
        self.http = web.client(env)
        self.sleep = sleep

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.http.close()

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base + path

    def get(self, path: str, *, params: dict | None = None, headers: dict | None = None,
            stream: bool = False) -> httpx.Response:
        web, url = self.web, self.url(path)
        refreshed, attempt = False, 0
        while True:
            token = self.tokens.access_token()
            sent = {"Authorization": f"Bearer {token}", "Accept": "application/json", **(headers or {})}
            try:
                response = netguard.send(self.http, "GET", url, params=params, headers=sent, stream=True)
            except SourceError:
                raise
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise SourceError(web.describe_error(url, exc)) from None
            except httpx.TransportError as exc:
                attempt += 1
                if attempt >= web.MAX_ATTEMPTS:
                    raise SourceError(web.describe_error(url, exc)) from None
                self.sleep(web.BACKOFF[min(attempt - 1, len(web.BACKOFF) - 1)])
                continue
            code = response.status_code
            if code == 401 and not refreshed:
                response.close()
                self.tokens.access_token(force_refresh=True)
                refreshed = True
                continue
            if code == 429 or code >= 500:
                wait = web.retry_after(response, attempt) if code in (429, 503) else web.BACKOFF[min(attempt, 3)]
                response.close()
                attempt += 1
                if attempt >= web.MAX_ATTEMPTS or wait > web.MAX_RETRY_AFTER:
                    raise SourceError(f"{self._what(url)}: {code} from the API, still after {attempt} attempts")
                self.sleep(wait)
                continue
            if code >= 400:
                raise self._error(url, response)
            return netguard.settled(response, stream=stream)

    def get_json(self, path: str, *, params: dict | None = None, headers: dict | None = None) -> dict:
        response = self.get(path, params=params, headers=headers, stream=True)
        try:
            body = self.web.read_capped(response, MAX_LISTING_BYTES, self._what(self.url(path)))
        finally:
            response.close()
        try:
            data = json.loads(body)
        except ValueError:
            raise SourceError(f"{self._what(self.url(path))}: the API answered without JSON") from None
        if not isinstance(data, dict):
            raise SourceError(f"{self._what(self.url(path))}: the API answered JSON that is not an object")
        return data

    def download(self, path: str, dest: Path, *, params: dict | None = None) -> tuple[str, int]:
        """Stream a file into `dest`, at most UDB_MAX_DOWNLOAD_BYTES: (content type, bytes)."""
        url = self.url(path)
        response = self.get(path, params=params, headers={"Accept": "*/*"}, stream=True)
        return self.web.save_capped(response, url, dest, cap=self.web.max_download_bytes(self.env),
                                    what=self._what(url))

    def _what(self, url: str) -> str:
        return f"{self.source_provider} {httpx.URL(url).copy_with(query=None)}"

    def _error(self, url: str, response: httpx.Response) -> SourceError:
        code = response.status_code
        try:
            detail = self.web.read_capped(response, 64 * 1024, url)
        except SourceError:
            detail = b""
        finally:
            response.close()
        message = ""
        try:
            error = json.loads(detail).get("error")
            if isinstance(error, dict):
                message = str(error.get("message") or error.get("code") or "")
            elif error:
                message = str(error)
        except (ValueError, AttributeError):
            pass
        said = f" ({message[:300]})" if message else ""
        what = self._what(url)
        if code == 401:
            return SourceError(f"{what}: 401 Unauthorized even with a refreshed token{said}: the authorization was "
                               f"revoked; discover the link again to authorize anew")
        if code == 403:
            return SourceError(f"{what}: 403 Forbidden: the authorized account may not read this{said}")
        if code == 404:
            return SourceError(f"{what}: 404 Not Found: the link points nowhere, or the authorized account cannot "
                               f"see it{said}")
        return SourceError(f"{what}: HTTP {code} {response.reason_phrase}{said}")
