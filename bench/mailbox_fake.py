"""A mailbox of N mails behind Microsoft Graph's and the Gmail API's shapes, for
bench/connectors: the token endpoints, Graph's inbox delta (pages of 50) and `$value`,
Gmail's profile, an empty `messages.list`, `history.list` (100 added a page) and
`messages.get?format=raw`. No checks
beyond the bearer token: the tests (tests/api/vendors.rs) hold the strict fakes.

    python3 bench/mailbox_fake.py PORT MAILS            serve
    python3 bench/mailbox_fake.py PORT MAILS graph|gmail  read every mail as a client would,
                                                          print mails per second (the baseline)
"""
import base64
import http.client
import json
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, MAILS = int(sys.argv[1]), int(sys.argv[2])
BODY = ("Dear collector,\r\n\r\n" + "I have paid the invoice last week, see the attached receipt.\r\n" * 60)


def mail(n):
    return (
        f"From: Debtor {n} <debtor{n}@mailbox.test>\r\nTo: collections@agency.test\r\n"
        f"Subject: Payment {n}\r\nMessage-ID: <bench-{n}@mailbox.test>\r\n"
        "Date: Sun, 06 Dec 2026 12:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + BODY
    ).encode()


IDS = [f"AAMkAGI2-{n:08d}=" for n in range(MAILS)]
RAW = {i: mail(n) for n, i in enumerate(IDS)}
TOKEN = "bench-token"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Each answer leaves in one write, without waiting for an ACK (Nagle's algorithm).
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def send(self, status, body, ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send(200, {"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"})

    def do_GET(self):
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.send(401, {"error": {"code": "InvalidAuthenticationToken", "message": "no"}})
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        parts = url.path.split("/")
        base = f"http://127.0.0.1:{PORT}"
        if url.path.endswith("/messages/delta"):
            start = int(q.get("$skiptoken", q.get("$deltatoken", "0")))
            end = min(start + 50, MAILS)
            page = {"value": [{"id": i} for i in IDS[start:end]]}
            link = f"{base}{url.path}"
            if end < MAILS:
                page["@odata.nextLink"] = f"{link}?$skiptoken={end}"
            else:
                page["@odata.deltaLink"] = f"{link}?$deltatoken={end}"
            return self.send(200, page)
        if url.path.endswith("/$value"):
            return self.send(200, RAW[urllib.parse.unquote(parts[-2])], "text/plain")
        # Gmail: the mail arrives after the connector was made, so the first sync lists an
        # empty inbox and the history brings every mail (100 a page).
        if url.path.endswith("/profile"):
            return self.send(200, {"emailAddress": "u", "historyId": "1"})
        if url.path.endswith("/messages"):
            return self.send(200, {"resultSizeEstimate": 0})
        if url.path.endswith("/history"):
            start = int(q.get("pageToken", "0"))
            end = min(start + 100, MAILS)
            added = [{"message": {"id": i, "threadId": i, "labelIds": ["INBOX"]}} for i in IDS[start:end]]
            page = {"history": [{"id": "2", "messagesAdded": added}], "historyId": str(1 + MAILS)}
            if end < MAILS:
                page["nextPageToken"] = str(end)
            return self.send(200, page)
        ident = urllib.parse.unquote(parts[-1])
        raw = base64.urlsafe_b64encode(RAW[ident]).decode()
        return self.send(200, {"id": ident, "raw": raw})


def read_all(kind):
    """One client, one connection, the requests parley makes, in turn: mails per second."""
    conn = http.client.HTTPConnection("127.0.0.1", PORT)
    conn.connect()
    conn.sock.setsockopt(__import__("socket").IPPROTO_TCP, __import__("socket").TCP_NODELAY, 1)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def get(path):
        conn.request("GET", path, headers=auth)
        r = conn.getresponse()
        return r.read()

    started = time.perf_counter()
    taken = 0
    if kind == "graph":
        path = "/v1.0/users/u/mailFolders/inbox/messages/delta"
        while True:
            page = json.loads(get(path))
            for item in page["value"]:
                get(f"/v1.0/users/u/messages/{urllib.parse.quote(item['id'], safe='')}/$value")
                taken += 1
            link = page.get("@odata.nextLink")
            if not link:
                break
            path = urllib.parse.urlsplit(link)._replace(scheme="", netloc="").geturl()
    else:
        get("/gmail/v1/users/u/profile")
        get("/gmail/v1/users/u/messages?labelIds=INBOX")
        token = None
        while True:
            path = "/gmail/v1/users/u/history?startHistoryId=1"
            page = json.loads(get(path + (f"&pageToken={token}" if token else "")))
            for m in (a["message"] for h in page["history"] for a in h["messagesAdded"]):
                raw = json.loads(get(f"/gmail/v1/users/u/messages/{m['id']}?format=raw"))["raw"]
                base64.urlsafe_b64decode(raw)
                taken += 1
            token = page.get("nextPageToken")
            if not token:
                break
    assert taken == MAILS
    print(round(MAILS / (time.perf_counter() - started)))


if len(sys.argv) > 3:
    read_all(sys.argv[3])
else:
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
