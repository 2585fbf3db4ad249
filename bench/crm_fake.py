"""The CRMs' intake for the benchmark (standard library only): just enough of Salesforce,
Dataverse and HubSpot to take activities as fast as this Python can, counting them.

    crm_fake.py PORT                 serves (GET /_done: {"activities": n})
    crm_fake.py PORT KIND N          posts N activities to the fake in KIND's batches over one
                                     kept connection and prints activities per second: the
                                     fake's own intake, the baseline of parley's figure
"""

import http.client
import http.server
import json
import sys
import threading
import time

COUNT = {"activities": 0}
LOCK = threading.Lock()


def took(n):
    with LOCK:
        COUNT["activities"] += n


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if "form-urlencoded" in (self.headers.get("Content-Type") or ""):
            return {}
        return json.loads(raw) if raw else {}

    def do_GET(self):
        path = self.path
        if path == "/_done":
            return self.answer(200, COUNT)
        if path.startswith("/services/data/v62.0/query"):
            return self.answer(200, {"totalSize": 1, "done": True, "records": [{"Id": "5000000000000001AA"}]})
        if "EntityDefinitions" in path:
            return self.answer(200, {"EntitySetName": "incidents", "PrimaryIdAttribute": "incidentid"})
        if path.startswith("/api/data/v9.2/incidents"):
            return self.answer(200, {"value": [{"incidentid": "00000000-0000-0000-0000-000000000001"}]})
        self.answer(404, {})

    def do_POST(self):
        path = self.path
        body = self.body()
        if path.endswith("/oauth2/token") or path.endswith("/oauth2/v2.0/token"):
            base = f"http://{self.headers.get('Host')}"
            return self.answer(200, {"access_token": "bench", "instance_url": base, "expires_in": 3600})
        if path.startswith("/api/data/v9.2/emails") or path.startswith("/api/data/v9.2/tasks"):
            took(1)
            return self.answer(204)
        if path.endswith("/search"):
            return self.answer(200, {"total": 1, "results": [{"id": "1", "properties": {}}]})
        if path.endswith("/batch/create"):
            inputs = body.get("inputs", [])
            took(len(inputs))
            results = [{"id": str(i + 1000), "properties": {"parley_message_id": x["properties"].get("parley_message_id")}}
                       for i, x in enumerate(inputs)]
            return self.answer(201, {"status": "COMPLETE", "results": results})
        if "/batch/associate/default" in path:
            return self.answer(200, {"status": "COMPLETE", "results": []})
        self.answer(404, {})

    def do_PATCH(self):
        path = self.path
        body = self.body()
        if path.startswith("/services/data/v62.0/composite/sobjects/"):
            records = body.get("records", [])
            took(len(records))
            return self.answer(200, [{"id": "02s000000000001AAA", "success": True, "errors": [], "created": True}
                                     for _ in records])
        self.answer(204)


def intake(port, kind, n):
    """N activities posted as parley batches them, one kept connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    text = "Dear customer, this is a reminder that invoice INV-2024-001 is due. " * 20
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}

    def call(method, path, body):
        conn.request(method, path, json.dumps(body), headers)
        r = conn.getresponse()
        r.read()

    t0 = time.time()
    sent = 0
    while sent < n:
        if kind == "salesforce":
            k = min(200, n - sent)
            records = [{"attributes": {"type": "EmailMessage"}, "Parley_Message_Id__c": f"msg_{sent + i}",
                        "Subject": "Payment reminder", "TextBody": text, "ParentId": "5000000000000001AA"}
                       for i in range(k)]
            call("PATCH", "/services/data/v62.0/composite/sobjects/EmailMessage/Parley_Message_Id__c",
                 {"allOrNone": False, "records": records})
        elif kind == "dynamics365":
            k = 1
            call("POST", "/api/data/v9.2/emails", {"activityid": f"id-{sent}", "subject": "Payment reminder",
                                                   "description": text})
        else:
            k = min(100, n - sent)
            inputs = [{"properties": {"parley_message_id": f"msg_{sent + i}", "hs_email_text": text}}
                      for i in range(k)]
            call("POST", "/crm/objects/2026-03/emails/batch/create", {"inputs": inputs})
            call("POST", "/crm/v4/associations/emails/deals/batch/associate/default",
                 {"inputs": [{"from": {"id": "1"}, "to": {"id": "1"}}] * k})
        sent += k
    return n / (time.time() - t0)


if __name__ == "__main__":
    port = int(sys.argv[1])
    if len(sys.argv) > 2:
        print(f"{intake(port, sys.argv[2], int(sys.argv[3])):.1f}")
    else:
        http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
