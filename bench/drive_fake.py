"""The four document systems' upload paths, for bench/drives: just enough of SharePoint's
Graph drives, Google Drive, Box and Dropbox for parley to mirror one large file through an
upload session, each part counted and thrown away (nothing is kept: the fake's own intake is
the limit measured). No checks beyond what the protocol needs: the tests
(tests/api/drive_fake.rs, gdrive_fake.rs, box_fake.rs, tests/peers/dropbox_fake.py) hold the
strict fakes.

    python3 bench/drive_fake.py PORT                 serve; GET /_done says the bytes received
                                                     by finished uploads
    python3 bench/drive_fake.py PORT KIND MIB PART   send MIB MiB in PART-MiB parts to it the
                                                     way KIND's sessions go, print MiB/s
"""
import http.client
import json
import sys
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
DONE = {"bytes": 0, "files": 0}
SESSIONS = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16

    def log_message(self, *args):
        pass

    def reply(self, status, body=None, headers=()):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def drain(self):
        n = int(self.headers.get("Content-Length") or 0)
        left = n
        body = b""
        while left:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            if n < 65536:
                body += chunk
            left -= len(chunk)
        return n, body

    def finished(self, n):
        DONE["bytes"] += n
        DONE["files"] += 1

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        self.drain()
        if path == "/_done":
            return self.reply(200, DONE)
        if "/delta" in path:
            return self.reply(200, {"value": [], "@odata.deltaLink": f"http://127.0.0.1:{PORT}{path}?token=1"})
        if path.endswith("/children"):
            return self.reply(200, {"value": []})
        if path == "/drive/v3/files":
            return self.reply(200, {"files": []})
        if path == "/drive/v3/changes/startPageToken":
            return self.reply(200, {"startPageToken": "1"})
        if path == "/drive/v3/changes":
            return self.reply(200, {"changes": [], "newStartPageToken": "1"})
        if path.endswith("/items"):
            return self.reply(200, {"total_count": 0, "entries": []})
        if path == "/2.0/events":
            return self.reply(200, {"chunk_size": 0, "next_stream_position": "1", "entries": []})
        self.reply(404, {})

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        n, body = self.drain()
        token = {"access_token": "bench", "expires_in": 3600, "token_type": "Bearer"}
        if path.endswith("/token"):
            return self.reply(200, token)
        new = str(uuid.uuid4())
        # SharePoint
        if path.endswith("/children"):
            return self.reply(201, {"id": new, "name": "x"})
        if path.endswith("/createUploadSession"):
            SESSIONS[new] = 0
            return self.reply(200, {"uploadUrl": f"http://127.0.0.1:{PORT}/up/{new}"})
        # Google Drive
        if path == "/drive/v3/files":
            return self.reply(200, {"id": new, "name": "x"})
        # Box
        if path == "/2.0/folders":
            return self.reply(201, {"type": "folder", "id": new})
        if path.endswith("/upload_sessions"):
            SESSIONS[new] = 0
            return self.reply(201, {"id": new, "part_size": 8 << 20})
        if path.endswith("/commit"):
            sid = urllib.parse.unquote(path.split("/")[-2])
            self.finished(SESSIONS.pop(sid, 0))
            return self.reply(201, {"entries": [{"type": "file", "id": new}]})
        # Dropbox
        if path == "/2/files/create_folder_v2":
            return self.reply(200, {"metadata": {"path_lower": json.loads(body)["path"].lower()}})
        if path == "/2/files/list_folder" or path == "/2/files/list_folder/continue":
            return self.reply(200, {"entries": [], "cursor": "c", "has_more": False})
        if path == "/2/files/upload_session/start":
            SESSIONS[new] = n
            return self.reply(200, {"session_id": new})
        if path == "/2/files/upload_session/append_v2":
            arg = json.loads(self.headers["Dropbox-API-Arg"])
            SESSIONS[arg["cursor"]["session_id"]] += n
            return self.reply(200, None)
        if path == "/2/files/upload_session/finish":
            arg = json.loads(self.headers["Dropbox-API-Arg"])
            self.finished(SESSIONS.pop(arg["cursor"]["session_id"]) + n)
            return self.reply(200, {".tag": "file", "id": "id:" + new, "name": "x"})
        if path == "/2/files/upload":
            self.finished(n)
            return self.reply(200, {".tag": "file", "id": "id:" + new, "name": "x"})
        self.reply(404, {})

    def do_PATCH(self):
        path = urllib.parse.urlsplit(self.path).path
        self.drain()
        new = str(uuid.uuid4())
        SESSIONS[new] = 0
        return self.reply(200, {}, [("Location", f"http://127.0.0.1:{PORT}/gs/{new}")])

    def do_PUT(self):
        path = urllib.parse.urlsplit(self.path).path
        n, _ = self.drain()
        total = int(self.headers.get("Content-Range", "bytes 0-0/0").rsplit("/", 1)[1])
        sid = urllib.parse.unquote(path.split("/")[-1])
        if path.startswith("/up/") or path.startswith("/gs/"):
            SESSIONS[sid] += n
            if SESSIONS[sid] < total:
                status = 202 if path.startswith("/up/") else 308
                return self.reply(status, {"nextExpectedRanges": [f"{SESSIONS[sid]}-"]},
                                  [("Range", f"bytes=0-{SESSIONS[sid] - 1}")])
            self.finished(SESSIONS.pop(sid))
            return self.reply(201, {"id": str(uuid.uuid4()), "name": "x"})
        # Box parts
        SESSIONS[sid] += n
        return self.reply(200, {"part": {"part_id": uuid.uuid4().hex[:8], "offset": 0, "size": n, "sha1": ""}})


def baseline(kind, mib, part_mib):
    """The fake's own intake: MIB MiB in PART-MiB requests on one kept connection."""
    conn = http.client.HTTPConnection("127.0.0.1", PORT)
    part = b"\0" * (part_mib << 20)
    total = mib << 20
    t0 = time.time()
    sent = 0
    while sent < total:
        size = min(len(part), total - sent)
        end = sent + size - 1
        if kind == "dropbox":
            arg = json.dumps({"cursor": {"session_id": "b", "offset": sent}, "close": False})
            conn.request("POST", "/2/files/upload_session/append_v2", body=part[:size],
                         headers={"Content-Type": "application/octet-stream", "Dropbox-API-Arg": arg})
        else:
            path = {"sharepoint": "/up/b", "google_drive": "/gs/b", "box": "/2.0/files/upload_sessions/b"}[kind]
            conn.request("PUT", path + "?baseline=1", body=part[:size],
                         headers={"Content-Range": f"bytes {sent}-{end}/{total + 1}"})
        conn.getresponse().read()
        sent += size
    elapsed = time.time() - t0
    print(f"{mib / elapsed:.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 2:
        baseline(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        SESSIONS.update({"b": 0})
        ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
