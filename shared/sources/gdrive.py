"""Google Drive links through the Drive API v3, with the tenant's OAuth token (`shared/sources/oauth/`).

The file id comes from the link: `drive.google.com/file/d/{id}`, `open?id={id}`, `uc?id={id}`,
`drive/folders/{id}` (also `drive/u/0/folders/{id}`), `docs.google.com/{spreadsheets,document,
presentation}/d/{id}`. `inspect` reads `files.get` (fields id, name, mimeType, size): a folder
is listed with `files.list?q='{id}' in parents` (every page, through `nextPageToken`), one
stream per supported file in it (sub-folders are not walked). Downloads: a stored file with
`alt=media`; a Google Sheet exported to CSV (`files/{id}/export?mimeType=text/csv`, its first
sheet), a Google Doc exported to DOCX (read as a document: fragments). Each download streams
into a temp file and goes through the same code as local and HTTP files (`http.py`, `files.py`,
`documents.py`), in bounded memory.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, quote, urlsplit

from shared.core.errors import SourceError
from shared.sources import documents, files
from shared.sources import http as web
from shared.sources.webdav import supported_name
from shared.core.tenancy import identifier
from shared.sources.detection import Hint, Signals
from shared.sources.oauth.api import ApiSession
from shared.sources.oauth.providers import OAuthProvider, ProviderConfig
from shared.sources.registry import Connector, register

PROVIDER = "gdrive"
MAX_FILES = 200
MAX_PAGES = 1000
FOLDER = "application/vnd.google-apps.folder"
SHEET = "application/vnd.google-apps.spreadsheet"
DOC = "application/vnd.google-apps.document"
GOOGLE_APPS = "application/vnd.google-apps."
# Google-native files UDB reads, exported: mime type -> (export mime type, extension).
EXPORTS = {SHEET: ("text/csv", ".csv"),
           DOC: ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", ".docx")}
FIELDS = "id,name,mimeType,size"
ID_RE = re.compile(r"^[A-Za-z0-9_-]{3,200}$")
PATH_ID = re.compile(r"/(?:file|spreadsheets|document|presentation|forms|drawings)/d/([A-Za-z0-9_-]+)"
                     r"|/folders/([A-Za-z0-9_-]+)")
HOSTS = ("drive.google.com", "docs.google.com")


def file_id(hint: str) -> str:
    """The Drive file (or folder) id a Google Drive/Docs link names."""
    link = hint.strip()
    parts = urlsplit(link)
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() not in ("http", "https") or host not in HOSTS:
        raise SourceError(f"not a Google Drive or Docs link: {link!r}")
    match = PATH_ID.search(parts.path)
    found = (match.group(1) or match.group(2)) if match else None
    if not found:
        found = next(iter(parse_qs(parts.query).get("id") or []), None)
    if not found or not ID_RE.fullmatch(found):
        raise SourceError(f"{link}: no Drive file id in the link (expected /file/d/<id>, open?id=<id>, "
                          f"/drive/folders/<id> or docs.google.com/spreadsheets/d/<id>)")
    return found


def _session(env) -> ApiSession:
    return ApiSession(env, PROVIDER, env.settings.gdrive_url)


def _get(session: ApiSession, fid: str) -> dict:
    return session.get_json(f"/files/{quote(fid, safe='')}", params={"fields": FIELDS, "supportsAllDrives": "true"})


def listing(session: ApiSession, folder: str) -> list[dict]:
    """Every file in the folder, page after page (nextPageToken)."""
    items: list[dict] = []
    token = None
    for _ in range(MAX_PAGES):
        params = {"q": f"'{folder}' in parents and trashed = false", "fields": f"nextPageToken, files({FIELDS})",
                  "pageSize": "200", "supportsAllDrives": "true", "includeItemsFromAllDrives": "true",
                  "orderBy": "name"}
        if token:
            params["pageToken"] = token
        body = session.get_json("/files", params=params)
        found = body.get("files")
        if not isinstance(found, list):
            raise SourceError("gdrive: a files.list page without a 'files' array")
        items.extend(f for f in found if isinstance(f, dict))
        token = body.get("nextPageToken")
        if not token:
            return items
    raise SourceError(f"gdrive: more than {MAX_PAGES} pages in the folder")


def plan(item: dict) -> tuple[str, str] | None:
    """(download path, file name to read it as) of a Drive file, or None when UDB cannot read it."""
    fid, name, mime = quote(item["id"], safe=""), item.get("name") or item["id"], item.get("mimeType", "")
    if mime in EXPORTS:
        export, ext = EXPORTS[mime]
        return f"/files/{fid}/export?mimeType={quote(export, safe='')}", _with_ext(name, ext)
    if mime.startswith(GOOGLE_APPS):
        return None  # slides, forms, drawings, shortcuts, folders
    if name.startswith(".") or not supported_name(name):
        return None
    return f"/files/{fid}?alt=media&supportsAllDrives=true", name


def _with_ext(name: str, ext: str) -> str:
    return name if name.lower().endswith(ext) else name + ext


def inspect(hint: str, *, env=None) -> dict:
    """One stream per supported file of the folder, or the one file (a Sheet: its CSV export)."""
    fid = file_id(hint)
    with _session(env) as session, web.scratch() as tmp:
        item = _get(session, fid)
        if item.get("mimeType") == FOLDER:
            listed = [f for f in listing(session, fid) if f.get("mimeType") != FOLDER]
            usable = [(f, p) for f in listed if (p := plan(f))]
            if not usable:
                raise SourceError(f"gdrive folder {item.get('name')!r}: no supported files ({len(listed)} files; "
                                  f"supported: Google Sheets, Google Docs, {files.supported()}, {documents.supported()})")
            if len(usable) > MAX_FILES:
                raise SourceError(f"gdrive folder {item.get('name')!r}: {len(usable)} files, more than {MAX_FILES} tables")
            short = item.get("name") or PROVIDER
        else:
            found = plan(item)
            if found is None:
                raise SourceError(f"gdrive: {item.get('name')!r} ({item.get('mimeType')}) is not a format UDB reads "
                                  f"(Google Sheets, Google Docs, {files.supported()}, {documents.supported()})")
            usable, short = [(item, found)], PROVIDER
        streams = []
        for i, (_entry, (path, name)) in enumerate(sorted(usable, key=lambda u: u[1][1])):
            dest = tmp / f"file-{i}"
            ctype, size = session.download(path, dest)
            fmt = web.file_format(name, ctype, dest)
            stream = web.describe_file(dest, fmt, name=name, location=path, size=size, env=env)
            stream["options"] = {"file_name": name}  # what sync reads the download as
            streams.append(stream)
    names = [s["name"] for s in streams]
    if len(set(names)) != len(names):
        raise SourceError(f"gdrive: two files map to the same table name ({', '.join(names)})")
    return {"provider": PROVIDER, "short": identifier(short, PROVIDER), "streams": streams}


def extract(stream: dict, out_dir: Path, *, env=None, part_bytes: int, memory_limit: str = "1GB",
            threads: int = 2) -> int:
    from shared.sources.msgraph import file_name

    with _session(env) as session, web.scratch() as tmp:
        dest = tmp / "download"
        session.download(stream["location"], dest)
        return web.extract_file(dest, stream, out_dir, name=PurePosixPath(file_name(stream)).name,
                                part_bytes=part_bytes, memory_limit=memory_limit, threads=threads, env=env)


class GoogleOAuth(OAuthProvider):
    """Google's OAuth 2.0 endpoints (UDB_OAUTH_GOOGLE_*)."""
    name = "google"
    label = "Google (Drive)"

    def config(self, settings) -> ProviderConfig:
        # offline + consent: Google returns a refresh token only then.
        return ProviderConfig(self.name, self.label, settings.google_auth_url, settings.google_token_url,
                              settings.google_device_url, settings.google_client_id, settings.google_client_secret,
                              settings.google_scopes,
                              (("access_type", "offline"), ("prompt", "consent"), ("include_granted_scopes", "true")),
                              "UDB_OAUTH_GOOGLE_CLIENT_ID", settings=settings)


# Link hosts and what detect says of each.
HOST_REASONS = {"drive.google.com": "Google Drive link (drive.google.com)",
                "docs.google.com": "Google Docs/Sheets link (docs.google.com)"}


@register
class GdriveConnector(Connector):
    """Google Drive files and folders, Sheets and Docs exported, with the tenant's token."""
    providers = (PROVIDER,)
    oauth = GoogleOAuth()

    def signals(self, hint: Hint) -> Signals | None:
        if not hint.is_web:
            return None
        host = (hint.url.host or "").lower()
        for suffix, reason in HOST_REASONS.items():
            if host == suffix or host.endswith("." + suffix):
                return Signals(claim=True).add(PROVIDER, 0.97, reason)
        return None
