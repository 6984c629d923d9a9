"""A Microsoft Graph test peer: the subset UDB's OneDrive/SharePoint connector speaks, served
by werkzeug on a free port in a thread: `GraphPeer(oauth_peer).start()`.

    GET /v1.0/shares/{shareId}/driveItem            the shared item (shareId = "u!" + unpadded
                                                    base64url of the sharing URL; padding or a
                                                    bad encoding: 400)
    GET /v1.0/shares/{shareId}/driveItem/children   a folder's children, `page_size` a page,
                                                    `@odata.nextLink` (absolute) to the next
    GET /v1.0/shares/{shareId}/driveItem/content    302 to the item's download URL
    GET /v1.0/drives/{driveId}/items/{itemId}/content   302 to the item's download URL
    GET /download/{itemId}?tempauth=...             the bytes (pre-authenticated: no bearer
                                                    needed; served on host `localhost`, another
                                                    host than the API's 127.0.0.1)

Every /v1.0 request must carry `Authorization: Bearer <token>` that the OAuth peer issued to
the Microsoft client and that has not expired (401 InvalidAuthenticationToken otherwise, as
Graph answers). `download_auth` records the Authorization header each download came with.
"""
from __future__ import annotations

import base64
import binascii
import secrets
import threading
from collections import Counter

from flask import Flask, Response, jsonify, redirect, request

from tests.peers.oauth_server import MS_CLIENT, OAuthPeer, ThreadedPeer, bearer_of

DRIVE_ID = "b!TestDrive01"


def decode_share_id(share_id: str) -> str:
    if not share_id.startswith("u!"):
        raise ValueError("a sharing URL's share id starts with u!")
    body = share_id[2:]
    if "=" in body or "+" in body or "/" in body:
        raise ValueError("the share id must be unpadded base64url")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"not base64url: {exc}") from None


class GraphPeer(ThreadedPeer):
    name = "graph-peer"

    def __init__(self, oauth: OAuthPeer, host: str = "127.0.0.1", port: int = 0, page_size: int = 1):
        self.oauth, self.page_size = oauth, page_size
        self.items: dict[str, dict] = {}
        self.content: dict[str, tuple[bytes, str]] = {}
        self.shares: dict[str, str] = {}        # sharing URL -> item id
        self.hits: Counter = Counter()
        self.download_auth: list[str | None] = []
        self.lock = threading.Lock()
        self._serve(self._app(), host, port)

    @property
    def api(self) -> str:
        return f"{self.url}/v1.0"

    # ------------------------------------------------------------ content

    def add_folder(self, name: str, parent: str | None = None) -> str:
        item_id = "F" + secrets.token_hex(6).upper()
        self.items[item_id] = {"id": item_id, "name": name, "folder": {"childCount": 0},
                               "parentReference": {"driveId": DRIVE_ID, "id": parent}}
        if parent:
            self.items[parent]["folder"]["childCount"] += 1
        return item_id

    def add_file(self, name: str, body: bytes, mime: str, parent: str | None = None) -> str:
        item_id = "I" + secrets.token_hex(6).upper()
        self.items[item_id] = {"id": item_id, "name": name, "size": len(body), "file": {"mimeType": mime},
                               "parentReference": {"driveId": DRIVE_ID, "id": parent}}
        self.content[item_id] = (body, mime)
        if parent:
            self.items[parent]["folder"]["childCount"] += 1
        return item_id

    def share(self, link: str, item_id: str) -> str:
        self.shares[link] = item_id
        return link

    # ------------------------------------------------------------ the API

    def _download_url(self, item_id: str) -> str:
        return f"http://localhost:{self.port}/download/{item_id}?tempauth={secrets.token_urlsafe(16)}"

    def _app(self) -> Flask:
        peer = self
        app = Flask("graph-peer")

        def error(status: int, code: str, message: str):
            return jsonify(error={"code": code, "message": message}), status

        @app.before_request
        def check_token():
            with peer.lock:
                peer.hits[request.path.split("/")[2] if request.path.startswith("/v1.0/") else "download"] += 1
            if request.path.startswith("/download/"):
                peer.download_auth.append(request.headers.get("Authorization"))
                return None
            if not peer.oauth.valid(bearer_of(request), MS_CLIENT):
                return error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")
            return None

        def shared(share_id: str) -> dict | tuple:
            try:
                link = decode_share_id(share_id)
            except ValueError as exc:
                return error(400, "invalidRequest", f"Invalid shares key: {exc}")
            item_id = peer.shares.get(link)
            if item_id is None:
                return error(404, "itemNotFound", "The sharing link no longer exists, or you do not have permission")
            return peer.items[item_id]

        def public(item: dict) -> dict:
            return {k: v for k, v in item.items()}

        @app.get("/v1.0/shares/<share_id>/driveItem")
        def drive_item(share_id):
            item = shared(share_id)
            return item if isinstance(item, tuple) else jsonify(public(item))

        @app.get("/v1.0/shares/<share_id>/driveItem/children")
        def children(share_id):
            item = shared(share_id)
            if isinstance(item, tuple):
                return item
            if "folder" not in item:
                return error(400, "invalidRequest", "the item is not a folder")
            kids = sorted((i for i in peer.items.values() if i["parentReference"]["id"] == item["id"]),
                          key=lambda i: i["name"])
            start = int(request.args.get("$skiptoken", "0"))
            page = kids[start:start + peer.page_size]
            body = {"value": [public(i) for i in page]}
            if start + peer.page_size < len(kids):
                body["@odata.nextLink"] = f"{peer.api}/shares/{share_id}/driveItem/children?$skiptoken={start + peer.page_size}"
            return jsonify(body)

        @app.get("/v1.0/shares/<share_id>/driveItem/content")
        def share_content(share_id):
            item = shared(share_id)
            if isinstance(item, tuple):
                return item
            if item["id"] not in peer.content:
                return error(400, "invalidRequest", "a folder has no content")
            return redirect(peer._download_url(item["id"]), 302)

        @app.get("/v1.0/drives/<drive_id>/items/<item_id>/content")
        def item_content(drive_id, item_id):
            if drive_id != DRIVE_ID or item_id not in peer.content:
                return error(404, "itemNotFound", "The resource could not be found.")
            return redirect(peer._download_url(item_id), 302)

        @app.get("/download/<item_id>")
        def download(item_id):
            if item_id not in peer.content or not request.args.get("tempauth"):
                return "not found", 404
            body, mime = peer.content[item_id]
            return Response(body, mimetype=mime)

        return app
