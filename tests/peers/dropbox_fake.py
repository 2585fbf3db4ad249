"""A stateful fake of Dropbox's API v2 for the document-system tests.

Dropbox publishes no OpenAPI description; its official Python SDK (PyPI `dropbox`, pinned by
scripts/lib/peers.sh) carries the stone validators of every route. Each call is checked with
its route's own argument validator (the JSON body of an RPC call, the `Dropbox-API-Arg`
header of a content call, which must be header-safe ASCII), and every answer and error is
encoded with the route's result and error validators, so the fake answers nothing Dropbox
could not. Written from https://www.dropbox.com/developers/documentation/http/documentation
(files/upload, upload_session/start|append_v2|finish, list_folder[/continue],
create_folder_v2, download, delete_v2) and https://developers.dropbox.com/oauth-guide (the
refresh-token grant). Paths compare without regard to case, as Dropbox's do.

Control for the tests (not Dropbox's): GET /_state (files and counters), POST /_put
{path, base64}, POST /_control {throttle, break_appends_after, forget_cursors, team}.
Prints the port it listens on, then serves until killed or until its stdin closes.
"""

import base64
import datetime
import hashlib
import json
import sys
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dropbox.files as files
from stone.backends.python_rsrc import stone_serializers as ss

APP_KEY = "k3yq0x6k1bqzg1a"
APP_SECRET = "s3cr3tqz1m0v7k2"
REFRESH = "rQ8dzCkVqYAAAAAAAAAAAfQ3Cq2cHnQ2zNFRyZkzE-lb6nGpXr6H9V2gmjnlp1wN"
MEMBER = "dbmid:AAHhy7WsR0x-u4ZCqiDl5Fz5zvuL3kmspwU"
LOCK = threading.Lock()
NOW = datetime.datetime(2026, 12, 6, 10, 0, 0)


class Drive:
    def __init__(self):
        self.entries = {}  # path_lower -> dict(tag, id, name, path_display, content, rev)
        self.log = []  # (seq, path_lower) of changes
        self.seq = 0
        self.generation = 0
        self.tokens = set()
        self.sessions = {}
        self.team = False
        self.throttle = 0
        self.throttled = 0
        self.break_appends_after = None
        self.appends = 0
        self.refused = 0
        self.counts = {"upload": 0, "start": 0, "append": 0, "finish": 0, "download": 0}
        self.largest_body = 0
        self.next_id = 0

    def change(self, path):
        self.seq += 1
        self.log.append((self.seq, path))

    def parent_exists(self, path):
        parent = path.rsplit("/", 1)[0]
        return parent == "" or (parent in self.entries and self.entries[parent]["tag"] == "folder")

    def make_folder(self, path_display):
        lower = path_display.lower()
        self.next_id += 1
        self.entries[lower] = {"tag": "folder", "id": f"id:fold{self.next_id:06d}AAAAAA",
                               "name": path_display.rsplit("/", 1)[1], "path_display": path_display}
        self.change(lower)
        return self.entries[lower]

    def write(self, path_display, content):
        lower = path_display.lower()
        entry = self.entries.get(lower)
        if entry is None or entry["tag"] != "file":
            self.next_id += 1
            entry = {"tag": "file", "id": f"id:a4ayc_80_OE{self.next_id:06d}AAAAYa",
                     "name": path_display.rsplit("/", 1)[1], "path_display": path_display, "revs": 0}
            self.entries[lower] = entry
        entry["content"] = content
        entry["revs"] += 1
        entry["rev"] = f"{entry['revs']:09x}0ca1b2c3"
        self.change(lower)
        return entry

    def metadata(self, lower):
        e = self.entries[lower]
        if e["tag"] == "folder":
            return files.FolderMetadata(name=e["name"], id=e["id"], path_lower=lower,
                                        path_display=e["path_display"])
        return files.FileMetadata(name=e["name"], id=e["id"], client_modified=NOW, server_modified=NOW,
                                  rev=e["rev"], size=len(e["content"]), path_lower=lower,
                                  path_display=e["path_display"],
                                  content_hash=hashlib.sha256(e["content"]).hexdigest())

    def lookup(self, path):
        if path.startswith("id:"):
            for lower, e in self.entries.items():
                if e["id"] == path:
                    return lower
            return None
        lower = path.lower()
        return lower if lower in self.entries else None


DRIVE = Drive()


class ApiError(Exception):
    def __init__(self, route, error, summary):
        super().__init__(summary)
        self.route, self.error, self.summary = route, error, summary


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", content_type="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        if self.path == "/_state":
            with LOCK:
                state = {"files": {p: {"id": e["id"], "tag": e["tag"], "revs": e.get("revs", 0),
                                       "sha256": hashlib.sha256(e.get("content", b"")).hexdigest(),
                                       "size": len(e.get("content", b""))}
                                   for p, e in DRIVE.entries.items()},
                         "counts": DRIVE.counts, "throttled": DRIVE.throttled,
                         "appends": DRIVE.appends, "refused": DRIVE.refused,
                         "largest_body": DRIVE.largest_body}
            return self.reply(200, state)
        self.reply(404, "Not found", "text/plain")

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        body = self.body()
        with LOCK:
            try:
                if path == "/_put":
                    a = json.loads(body)
                    parts = a["path"].split("/")
                    for i in range(2, len(parts)):
                        folder = "/".join(parts[:i])
                        if folder.lower() not in DRIVE.entries:
                            DRIVE.make_folder(folder)
                    DRIVE.write(a["path"], base64.b64decode(a["base64"]))
                    return self.reply(200, {})
                if path == "/_control":
                    a = json.loads(body)
                    DRIVE.throttle = a.get("throttle", DRIVE.throttle)
                    if "break_appends_after" in a:
                        DRIVE.break_appends_after = a["break_appends_after"]
                    if a.get("forget_cursors"):
                        DRIVE.generation += 1
                    DRIVE.team = a.get("team", DRIVE.team)
                    return self.reply(200, {})
                if path == "/oauth2/token":
                    return self.token(body)
                return self.route(path, body)
            except ApiError as e:
                encoded = ss.json_encode(e.route.error_type, e.error)
                return self.reply(409, {"error_summary": e.summary, "error": json.loads(encoded)})

    def token(self, body):
        form = dict(urllib.parse.parse_qsl(body.decode()))
        if form.get("grant_type") != "refresh_token":
            return self.reply(400, {"error": "unsupported_grant_type"})
        if form.get("client_id") != APP_KEY or form.get("client_secret") != APP_SECRET:
            return self.reply(400, {"error": "invalid_client", "error_description": "Invalid client_id or client_secret"})
        if form.get("refresh_token") != REFRESH:
            return self.reply(400, {"error": "invalid_grant", "error_description": "refresh token is malformed"})
        token = "sl.B" + uuid.uuid4().hex
        DRIVE.tokens.add(token)
        return self.reply(200, {"access_token": token, "token_type": "bearer", "expires_in": 14400})

    def gate(self):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in DRIVE.tokens:
            self.reply(401, {"error_summary": "invalid_access_token/", "error": {".tag": "invalid_access_token"}})
            return False
        if DRIVE.team and self.headers.get("Dropbox-API-Select-User") != MEMBER:
            self.reply(400, "Error in call to API function \"files\": This API function operates on a "
                            "single Dropbox account, but the OAuth 2 access token you provided is for an "
                            "entire Dropbox Business team. Provide the Dropbox-API-Select-User header.",
                       "text/plain")
            return False
        if DRIVE.throttle > 0:
            DRIVE.throttle -= 1
            DRIVE.throttled += 1
            self.reply(429, {"error_summary": "too_many_write_operations/", "error": {"reason": {".tag": "too_many_write_operations"}, "retry_after": 1}},
                       headers=[("Retry-After", "1")])
            return False
        return True

    def route(self, path, body):
        name = path[len("/2/files/"):] if path.startswith("/2/files/") else None
        routes = {"upload": files.upload, "upload_session/start": files.upload_session_start,
                  "upload_session/append_v2": files.upload_session_append_v2,
                  "upload_session/finish": files.upload_session_finish,
                  "download": files.download, "create_folder_v2": files.create_folder_v2,
                  "list_folder": files.list_folder, "list_folder/continue": files.list_folder_continue,
                  "delete_v2": files.delete_v2}
        route = routes.get(name)
        if route is None:
            return self.reply(404, "Unknown API function", "text/plain")
        if not self.gate():
            return None
        content = route.attrs.get("host") == "content"
        raw = self.headers.get("Dropbox-API-Arg", "") if content else body.decode()
        if content and not raw.isascii():
            return self.reply(400, "Dropbox-API-Arg is not header-safe JSON", "text/plain")
        try:
            arg = ss.json_decode(route.arg_type, raw or "null")
        except Exception as e:  # the SDK's validators refuse it: Dropbox answers 400
            return self.reply(400, f"Error in call to API function \"files/{name}\": {e}", "text/plain")
        data = body if content else b""
        DRIVE.largest_body = max(DRIVE.largest_body, len(data))
        result = getattr(self, name.replace("/", "_"))(route, arg, data)
        if name == "download":
            meta, blob = result
            header = ss.json_encode(route.result_type, meta)
            return self.reply(200, blob, "application/octet-stream", [("Dropbox-API-Result", header)])
        return self.reply(200, ss.json_encode(route.result_type, result))

    def upload(self, route, arg, data):
        DRIVE.counts["upload"] += 1
        return self.commit(route, arg, data, lambda r: files.UploadError.path(files.UploadWriteFailed(reason=r, upload_session_id="")))

    def commit(self, route, info, data, path_error):
        lower = info.path.lower()
        if not DRIVE.parent_exists(lower):
            raise ApiError(route, path_error(files.WriteError.no_write_permission), "path/no_write_permission/")
        existing = DRIVE.entries.get(lower)
        if existing is not None and (existing["tag"] == "folder" or not info.mode.is_overwrite()):
            raise ApiError(route, path_error(files.WriteError.conflict(files.WriteConflictError.file)), "path/conflict/file/")
        DRIVE.write(info.path, data)
        return DRIVE.metadata(lower)

    def upload_session_start(self, route, arg, data):
        DRIVE.counts["start"] += 1
        sid = "pid_upload_session:" + uuid.uuid4().hex
        DRIVE.sessions[sid] = bytearray(data)
        return files.UploadSessionStartResult(session_id=sid)

    def check_cursor(self, route, cursor, union, wrap):
        """The session's bytes so far; `union` is the route's lookup error type, `wrap` puts
        one into the route's error."""
        buf = DRIVE.sessions.get(cursor.session_id)
        if buf is None:
            raise ApiError(route, wrap(union.not_found), "not_found/")
        if cursor.offset != len(buf):
            raise ApiError(route, wrap(union.incorrect_offset(
                files.UploadSessionOffsetError(correct_offset=len(buf)))), "incorrect_offset/")
        return buf

    def upload_session_append_v2(self, route, arg, data):
        DRIVE.appends += 1
        if DRIVE.break_appends_after is not None and DRIVE.appends > DRIVE.break_appends_after:
            DRIVE.refused += 1
            raise ApiError(route, files.UploadSessionAppendError.other, "other/")
        buf = self.check_cursor(route, arg.cursor, files.UploadSessionAppendError, lambda e: e)
        DRIVE.counts["append"] += 1
        buf.extend(data)
        return None

    def upload_session_finish(self, route, arg, data):
        buf = self.check_cursor(route, arg.cursor, files.UploadSessionLookupError,
                                files.UploadSessionFinishError.lookup_failed)
        buf.extend(data)
        DRIVE.counts["finish"] += 1
        result = self.commit(route, arg.commit, bytes(buf),
                             lambda r: files.UploadSessionFinishError.path(r))
        del DRIVE.sessions[arg.cursor.session_id]
        return result

    def download(self, route, arg, data):
        lower = DRIVE.lookup(arg.path)
        if lower is None or DRIVE.entries[lower]["tag"] != "file":
            raise ApiError(route, files.DownloadError.path(files.LookupError.not_found), "path/not_found/")
        DRIVE.counts["download"] += 1
        return DRIVE.metadata(lower), DRIVE.entries[lower]["content"]

    def create_folder_v2(self, route, arg, data):
        lower = arg.path.lower()
        if lower in DRIVE.entries:
            raise ApiError(route, files.CreateFolderError.path(files.WriteError.conflict(files.WriteConflictError.folder)), "path/conflict/folder/")
        if not DRIVE.parent_exists(lower):
            # Dropbox makes the parents of a folder.
            parts = arg.path.split("/")
            for i in range(2, len(parts)):
                folder = "/".join(parts[:i])
                if folder.lower() not in DRIVE.entries:
                    DRIVE.make_folder(folder)
        DRIVE.make_folder(arg.path)
        return files.CreateFolderResult(metadata=DRIVE.metadata(lower))

    def listing(self, root, since, recursive):
        changed = []
        for seq, lower in DRIVE.log:
            if seq <= since or not (lower == root or lower.startswith(root + "/")):
                continue
            if not recursive and lower.rsplit("/", 1)[0] != root:
                continue
            changed.append(lower)
        out, seen = [], set()
        for lower in changed:
            if lower in seen:
                continue
            seen.add(lower)
            if lower in DRIVE.entries:
                out.append(DRIVE.metadata(lower))
            else:
                out.append(files.DeletedMetadata(name=lower.rsplit("/", 1)[1], path_lower=lower, path_display=lower))
        cursor = f"AAH{DRIVE.generation}:{DRIVE.seq}:{int(recursive)}:" + base64.urlsafe_b64encode(root.encode()).decode()
        return files.ListFolderResult(entries=out, cursor=cursor, has_more=False)

    def list_folder(self, route, arg, data):
        lower = arg.path.lower()
        if lower not in DRIVE.entries:
            raise ApiError(route, files.ListFolderError.path(files.LookupError.not_found), "path/not_found/")
        return self.listing(lower, 0, arg.recursive)

    def list_folder_continue(self, route, arg, data):
        try:
            head, seq, recursive, root = arg.cursor[3:].split(":", 3)
            if int(head) != DRIVE.generation:
                raise ValueError
            root = base64.urlsafe_b64decode(root).decode()
        except ValueError:
            raise ApiError(route, files.ListFolderContinueError.reset, "reset/")
        return self.listing(root, int(seq), recursive == "1")

    def delete_v2(self, route, arg, data):
        lower = DRIVE.lookup(arg.path)
        if lower is None:
            raise ApiError(route, files.DeleteError.path_lookup(files.LookupError.not_found), "path_lookup/not_found/")
        meta = DRIVE.metadata(lower)
        for p in [p for p in DRIVE.entries if p == lower or p.startswith(lower + "/")]:
            del DRIVE.entries[p]
            DRIVE.change(p)
        return files.DeleteResult(metadata=meta)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()


if __name__ == "__main__":
    main()
