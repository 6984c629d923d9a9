"""OneDrive and SharePoint share links through Microsoft Graph, with the tenant's OAuth token
(`shared/sources/oauth/`).

A share link (1drv.ms, onedrive.live.com, *.sharepoint.com) becomes a share id: "u!" + the
unpadded base64url of the URL. `inspect` reads `GET /shares/{shareId}/driveItem`: a file is one
stream; a folder is listed with `GET /shares/{shareId}/driveItem/children` (every page, through
`@odata.nextLink`), one stream per supported file in it (data files and documents; sub-folders
are not walked). Each file is downloaded with `/content` — Graph answers 302 to a
pre-authenticated download URL, followed without the bearer token — into a temp file and
described, and at sync extracted, by the same code as local and HTTP files (`http.py`,
`files.py`, `documents.py`), in bounded memory.
"""
from __future__ import annotations

import base64
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

from shared.core.errors import SourceError
from shared.sources import documents, files
from shared.sources import http as web
from shared.sources.webdav import supported_name
from shared.core.tenancy import identifier
from shared.sources.detection import Hint, Signals
from shared.sources.oauth.api import ApiSession
from shared.sources.oauth.providers import OAuthProvider, ProviderConfig
from shared.sources.registry import Connector, register

PROVIDERS = ("onedrive", "sharepoint")
MAX_FILES = 200
MAX_PAGES = 1000
ITEM_FIELDS = "id,name,size,file,folder,parentReference"
# Grants the caller access through the link for this request when it has none yet.
SHARE_HEADERS = {"Prefer": "redeemSharingLinkIfNecessary"}


def share_id(link: str) -> str:
    """Graph's share id of a sharing URL: "u!" + base64url(URL), '=' padding removed."""
    return "u!" + base64.urlsafe_b64encode(link.strip().encode("utf-8")).decode().rstrip("=")


def provider_of(link: str) -> str:
    """onedrive or sharepoint, as detect names the link's host."""
    host = (urlsplit(link.strip()).hostname or "").lower()
    if host.endswith(".sharepoint.com") and not host.endswith("-my.sharepoint.com"):
        return "sharepoint"
    return "onedrive"


def parse(hint: str) -> str:
    link = hint.strip()
    parts = urlsplit(link)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise SourceError(f"not a OneDrive/SharePoint share link: {web.redact(link)!r}")
    return link


def _session(env, provider: str) -> ApiSession:
    return ApiSession(env, provider, env.settings.graph_url)


def file_name(stream: dict) -> str:
    """The file name sync reads a download as (its extension picks the reader): the one
    discovery saw, else the stream's name with its format's extension."""
    kept = (stream.get("options") or {}).get("file_name")
    if isinstance(kept, str) and kept and "/" not in kept:
        return kept
    ext = {"csv": ".csv", "tsv": ".tsv", "parquet": ".parquet", "json": ".json", "ndjson": ".ndjson",
           "xlsx": ".xlsx", "pdf": ".pdf", "docx": ".docx", "html": ".html", "markdown": ".md", "text": ".txt"}
    return PurePosixPath(stream["name"] + ext.get(stream["format"], "")).name


def _content_path(item: dict, sid: str, top: bool) -> str:
    if top:
        return f"/shares/{sid}/driveItem/content"
    drive = (item.get("parentReference") or {}).get("driveId")
    if not drive:
        raise SourceError(f"{item.get('name')}: Graph listed it without parentReference.driveId")
    return f"/drives/{quote(drive, safe='!')}/items/{quote(item['id'], safe='!')}/content"


def children(session: ApiSession, sid: str) -> list[dict]:
    """Every child of the shared folder, page after page (@odata.nextLink)."""
    items: list[dict] = []
    page = f"/shares/{sid}/driveItem/children"
    params: dict[str, str] | None = {"$select": ITEM_FIELDS, "$top": "200"}
    for _ in range(MAX_PAGES):
        body = session.get_json(page, params=params, headers=SHARE_HEADERS)
        value = body.get("value")
        if not isinstance(value, list):
            raise SourceError(f"{session.source_provider}: a children page without a 'value' array")
        items.extend(v for v in value if isinstance(v, dict))
        next_link = body.get("@odata.nextLink")
        if not next_link:
            return items
        page, params = str(next_link), None
    raise SourceError(f"{session.source_provider}: more than {MAX_PAGES} pages of children")


def inspect(hint: str, *, env=None) -> dict:
    """One stream per supported file of the shared folder, or the one shared file."""
    link = parse(hint)
    provider = provider_of(link)
    sid = share_id(link)
    with _session(env, provider) as session, web.scratch() as tmp:
        item = session.get_json(f"/shares/{sid}/driveItem", params={"$select": ITEM_FIELDS}, headers=SHARE_HEADERS)
        if "folder" in item:
            listed = [c for c in children(session, sid) if "file" in c and isinstance(c.get("name"), str)]
            usable = [c for c in listed if not c["name"].startswith(".") and supported_name(c["name"])]
            if not usable:
                raise SourceError(f"{provider} folder {item.get('name')!r}: no supported files ({len(listed)} files; "
                                  f"supported: {files.supported()}, {documents.supported()})")
            if len(usable) > MAX_FILES:
                raise SourceError(f"{provider} folder {item.get('name')!r}: {len(usable)} files, more than {MAX_FILES} tables")
            entries = [(c, _content_path(c, sid, False)) for c in sorted(usable, key=lambda c: c["name"])]
            short = item.get("name") or provider
        elif "file" in item or item.get("name"):
            entries = [(item, _content_path(item, sid, True))]
            short = provider
        else:
            raise SourceError(f"{provider}: the link is neither a file nor a folder")
        streams = []
        for i, (entry, path) in enumerate(entries):
            dest = tmp / f"file-{i}"
            ctype, size = session.download(path, dest)
            mime = ((entry.get("file") or {}).get("mimeType") or "").lower()
            fmt = web.file_format(entry["name"], ctype if ctype in web.DATA_TYPES else mime, dest)
            stream = web.describe_file(dest, fmt, name=entry["name"], location=path, size=size, env=env)
            stream["options"] = {"file_name": entry["name"]}  # what sync reads the download as
            streams.append(stream)
    names = [s["name"] for s in streams]
    if len(set(names)) != len(names):
        raise SourceError(f"{provider}: two files map to the same table name ({', '.join(names)})")
    return {"provider": provider, "short": identifier(short, provider), "streams": streams}


def extract(stream: dict, out_dir: Path, *, env=None, part_bytes: int, memory_limit: str = "1GB",
            threads: int = 2) -> int:
    name = file_name(stream)
    with _session(env, "onedrive/sharepoint") as session, web.scratch() as tmp:
        dest = tmp / "download"
        session.download(stream["location"], dest)
        return web.extract_file(dest, stream, out_dir, name=name, part_bytes=part_bytes,
                                memory_limit=memory_limit, threads=threads, env=env)


class MicrosoftOAuth(OAuthProvider):
    """Microsoft identity platform v2 (Entra ID): authorize, token and device endpoints under
    the authority (UDB_OAUTH_MS_AUTHORITY)."""
    name = "microsoft"
    label = "Microsoft (OneDrive/SharePoint)"

    def config(self, settings) -> ProviderConfig:
        base = settings.ms_authority.rstrip("/")
        return ProviderConfig(self.name, self.label, f"{base}/authorize", f"{base}/token", f"{base}/devicecode",
                              settings.ms_client_id, settings.ms_client_secret, settings.ms_scopes,
                              (("response_mode", "query"),), "UDB_OAUTH_MS_CLIENT_ID", refresh_scopes=True,
                              settings=settings)


# Share-link hosts: (host, provider, reason); *.sharepoint.com is told apart below.
SHARE_HOSTS = (("1drv.ms", "onedrive", "OneDrive short share link (1drv.ms)"),
               ("onedrive.live.com", "onedrive", "OneDrive share link (onedrive.live.com)"))


@register
class MsGraphConnector(Connector):
    """OneDrive and SharePoint share links, read through Microsoft Graph with the tenant's token."""
    providers = PROVIDERS
    oauth = MicrosoftOAuth()

    def signals(self, hint: Hint) -> Signals | None:
        if not hint.is_web:
            return None
        host = (hint.url.host or "").lower()
        for suffix, provider, reason in SHARE_HOSTS:
            if host == suffix or host.endswith("." + suffix):
                return Signals(claim=True).add(provider, 0.97, reason)
        if host.endswith("-my.sharepoint.com"):
            return (Signals(claim=True).add("onedrive", 0.95, "OneDrive for Business link (*-my.sharepoint.com)")
                    .add("sharepoint", 0.75, "a SharePoint host"))
        if host.endswith(".sharepoint.com"):
            return Signals(claim=True).add("sharepoint", 0.97, "SharePoint link (*.sharepoint.com)")
        return None
