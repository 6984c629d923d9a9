"""A Google Drive API v3 test peer: the subset UDB's Drive connector speaks, served by werkzeug
on a free port in a thread: `DrivePeer(oauth_peer).start()`.

    GET /drive/v3/files/{id}?fields=...              files.get (only the fields asked for)
    GET /drive/v3/files/{id}?alt=media               a stored file's bytes (a Google-native
                                                     file: 403 fileNotDownloadable, as Drive)
    GET /drive/v3/files?q='{id}' in parents ...      files.list, `page_size` a page, nextPageToken
    GET /drive/v3/files/{id}/export?mimeType=...     a Google Sheet as text/csv, a Google Doc as
                                                     DOCX (or text/plain); other types 400

Every request must carry `Authorization: Bearer <token>` that the OAuth peer issued to the
Google client and that has not expired (401 otherwise). `seen` records (path, query) of each.
"""
from __future__ import annotations

import re
import secrets
import threading
from collections import Counter

from flask import Flask, Response, jsonify, request

from tests.peers.oauth_server import GOOGLE_CLIENT, OAuthPeer, ThreadedPeer, bearer_of

FOLDER = "application/vnd.google-apps.folder"
SHEET = "application/vnd.google-apps.spreadsheet"
DOC = "application/vnd.google-apps.document"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PARENTS_Q = re.compile(r"^'([A-Za-z0-9_-]+)' in parents(?: and trashed ?= ?false)?$")


class DrivePeer(ThreadedPeer):
    name = "drive-peer"

    def __init__(self, oauth: OAuthPeer, host: str = "127.0.0.1", port: int = 0, page_size: int = 1):
        self.oauth, self.page_size = oauth, page_size
        self.files: dict[str, dict] = {}
        self.bodies: dict[str, dict[str, bytes]] = {}   # id -> {mime type served: bytes}
        self.hits: Counter = Counter()
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self._serve(self._app(), host, port)

    @property
    def api(self) -> str:
        return f"{self.url}/drive/v3"

    def _new(self, name: str, mime: str, parent: str | None, size: int | None) -> str:
        file_id = "1" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")
        entry = {"id": file_id, "name": name, "mimeType": mime, "parents": [parent] if parent else []}
        if size is not None:
            entry["size"] = str(size)  # Drive answers sizes as strings
        self.files[file_id] = entry
        return file_id

    def add_folder(self, name: str, parent: str | None = None) -> str:
        return self._new(name, FOLDER, parent, None)

    def add_file(self, name: str, body: bytes, mime: str, parent: str | None = None) -> str:
        file_id = self._new(name, mime, parent, len(body))
        self.bodies[file_id] = {mime: body}
        return file_id

    def add_sheet(self, name: str, csv_body: bytes, parent: str | None = None) -> str:
        file_id = self._new(name, SHEET, parent, None)
        self.bodies[file_id] = {"text/csv": csv_body}
        return file_id

    def add_doc(self, name: str, docx_body: bytes, text: bytes, parent: str | None = None) -> str:
        file_id = self._new(name, DOC, parent, None)
        self.bodies[file_id] = {DOCX: docx_body, "text/plain": text}
        return file_id

    def _app(self) -> Flask:
        peer = self
        app = Flask("drive-peer")

        def error(status: int, reason: str, message: str):
            return jsonify(error={"code": status, "message": message, "errors": [{"reason": reason}]}), status

        @app.before_request
        def check_token():
            with peer.lock:
                peer.hits[request.path] += 1
                peer.seen.append((request.path, request.query_string.decode()))
            if not peer.oauth.valid(bearer_of(request), GOOGLE_CLIENT):
                return error(401, "authError", "Request had invalid authentication credentials.")
            return None

        def fields_of(entry: dict, fields: str) -> dict:
            wanted = [f.strip() for f in fields.split(",") if f.strip()] or ["id", "name", "mimeType"]
            return {k: entry[k] for k in wanted if k in entry}

        @app.get("/drive/v3/files/<file_id>")
        def get(file_id):
            entry = peer.files.get(file_id)
            if entry is None:
                return error(404, "notFound", f"File not found: {file_id}.")
            if request.args.get("alt") == "media":
                if entry["mimeType"].startswith("application/vnd.google-apps."):
                    return error(403, "fileNotDownloadable", "Only files with binary content can be downloaded. "
                                                             "Use Export with Docs Editors files.")
                return Response(peer.bodies[file_id][entry["mimeType"]], mimetype=entry["mimeType"])
            return jsonify(fields_of(entry, request.args.get("fields", "")))

        @app.get("/drive/v3/files")
        def listing():
            match = PARENTS_Q.fullmatch(request.args.get("q", ""))
            if not match:
                return error(400, "invalid", "Invalid Value: q")
            inside = sorted((f for f in peer.files.values() if match.group(1) in f["parents"]),
                            key=lambda f: f["name"])
            start = int(request.args.get("pageToken") or 0)
            size = min(peer.page_size, int(request.args.get("pageSize", 100)))
            fields = request.args.get("fields", "")
            inner = re.search(r"files\(([^)]*)\)", fields)
            body = {"files": [fields_of(f, inner.group(1) if inner else "") for f in inside[start:start + size]]}
            if start + size < len(inside):
                body["nextPageToken"] = str(start + size)
            return jsonify(body)

        @app.get("/drive/v3/files/<file_id>/export")
        def export(file_id):
            entry = peer.files.get(file_id)
            if entry is None:
                return error(404, "notFound", f"File not found: {file_id}.")
            wanted = request.args.get("mimeType", "")
            body = peer.bodies.get(file_id, {}).get(wanted)
            if body is None or not entry["mimeType"].startswith("application/vnd.google-apps."):
                return error(400, "badRequest", f"Export of {entry['mimeType']} to {wanted!r} is not supported.")
            return Response(body, mimetype=wanted)

        return app
