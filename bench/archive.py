"""The mail archive against a real IMAP server (Dovecot), and the export of a case.

1. Baseline: one client APPENDs MAILS mails (~4 KB) to Dovecot on one kept connection, in
   turn (python imaplib): the server's own rate for what the archive asks of it.
2. parley on its defaults (SQLite) with an `archive` connector (target imap): MAILS mails
   posted to /api/inbound/email by 8 clients onto one case; journaled per second = MAILS /
   the time from the first post until the archive mailbox holds them all (each journaling
   is a job of the queue: a connection, a Message-ID search and an APPEND), and the ratio
   to the baseline. The posts alone are timed too.
3. The export of that case as MBOX and as a ZIP of .eml files (each mail's exact bytes,
   opened from its sealed copy), against a client reading the same messages one by one
   through GET /api/messages/{id} (what it would do without the export).

Usage: python3 bench/archive.py BINARY [MAILS]
"""

import concurrent.futures
import imaplib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from bench import STARTED, Parley, free_port  # noqa: E402


def dovecot(folder):
    """A Dovecot of its own in `folder`, one user parley/secret; its port."""
    port = free_port()
    uid, gid = (65534, 65534) if os.getuid() == 0 else (os.getuid(), os.getgid())
    os.makedirs(f"{folder}/mail", mode=0o777, exist_ok=True)
    os.chmod(folder, 0o755)
    os.chmod(f"{folder}/mail", 0o777)
    with open(f"{folder}/passwd", "w") as f:
        f.write(f"parley:{{PLAIN}}secret:{uid}:{gid}::{folder}/mail/parley\n")
    root = os.getuid() == 0
    conf = f"""protocols = imap
listen = 127.0.0.1
base_dir = {folder}/run
state_dir = {folder}/run
log_path = {folder}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {"dovecot" if root else "$default_internal_user"}
default_login_user = {"dovenull" if root else "$default_login_user"}
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = {folder}/passwd
}}
userdb {{
  driver = passwd-file
  args = {folder}/passwd
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""
    with open(f"{folder}/dovecot.conf", "w") as f:
        f.write(conf)
    binary = next((p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.path.exists(p)), "dovecot")
    proc = subprocess.Popen([binary, "-c", f"{folder}/dovecot.conf", "-F"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    STARTED.append(proc)
    deadline = time.time() + 30
    while True:
        try:
            imaplib.IMAP4("127.0.0.1", port).logout()
            return port
        except OSError:
            if time.time() > deadline:
                raise RuntimeError("dovecot did not start")
            time.sleep(0.05)


def mail(n, to):
    body = ("I paid the invoice yesterday; the receipt follows. " * 70)[:3800]
    return (f"From: debtor@example.com\r\nTo: {to}\r\nSubject: Re: Your invoice {n}\r\n"
            f"Message-ID: <bench-{n}-{time.time_ns()}@example.com>\r\nDate: Sun, 6 Dec 2026 10:00:00 +0000\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


def count(port, folder):
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login("parley", "secret")
    typ, data = m.select(folder)
    n = int(data[0]) if typ == "OK" else 0
    m.logout()
    return n


def baseline(port, mails):
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login("parley", "secret")
    m.create("Baseline")
    started = time.perf_counter()
    for n in range(mails):
        m.append("Baseline", "(\\Seen)", None, mail(n, "case@localhost"))
    took = time.perf_counter() - started
    m.logout()
    return mails / took


def post(p, token, raw):
    req = urllib.request.Request(p.base + "/api/inbound/email", method="POST", data=raw)
    req.add_header("Authorization", "Bearer " + token)
    req.add_header("Content-Type", "message/rfc822")
    urllib.request.urlopen(req).read()


def timed_get(p, token, path):
    req = urllib.request.Request(p.base + path)
    req.add_header("Authorization", "Bearer " + token)
    started = time.perf_counter()
    size = 0
    with urllib.request.urlopen(req) as r:
        while chunk := r.read(1 << 16):
            size += len(chunk)
    return size, time.perf_counter() - started


def one_by_one(p, token, case):
    """The baseline of an export: a client reading each message of the case through
    GET /api/messages/{id}, in turn; messages per second."""
    ids, cursor = [], None
    while True:
        page = p.request("GET", f"/api/cases/{case}/messages?limit=200" + (f"&cursor={cursor}" if cursor else ""), token)
        ids += [m["messageId"] for m in page["messages"]]
        cursor = page.get("nextCursor")
        if not cursor:
            break
    started = time.perf_counter()
    for i in ids:
        p.request("GET", f"/api/messages/{i}", token)
    return len(ids) / (time.perf_counter() - started)


def main():
    binary = sys.argv[1]
    mails = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    work = tempfile.mkdtemp()
    os.chmod(work, 0o755)  # Dovecot's users read their files below it
    try:
        port = dovecot(f"{work}/dovecot")
        base_rate = baseline(port, mails)
        print(f"baseline: one client APPENDs to Dovecot: {base_rate:,.0f} mails/s")

        # Sender authentication is measured by bench/connectors; here the senders' domain
        # has no DNS to ask.
        p = Parley(binary, f"{work}/data", f"sqlite://{work}/data/parley.db?mode=rwc", PARLEY_DNS_RESOLVER="off")
        admin = p.cli("party", "create", "--kind", "admin", "--name", "Operations")["partyId"]
        admin_token = p.cli("token", "create", "--party", admin)["token"]
        token, case = p.setup()
        p.request("POST", "/api/connectors", admin_token, {
            "type": "archive", "name": "Archive",
            "settings": {"target": "imap", "url": f"imap://parley:secret@127.0.0.1:{port}/Archive?tls=none"}})
        to = f"case-{case}@localhost"
        raws = [mail(n, to) for n in range(mails)]
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda raw: post(p, admin_token, raw), raws))
        posted = time.perf_counter() - started
        deadline = time.time() + 600
        while count(port, "Archive") < mails:
            if time.time() > deadline:
                raise RuntimeError("the archive did not take every mail in 10 minutes")
            time.sleep(0.05)
        took = time.perf_counter() - started
        rate = mails / took
        print(f"parley, defaults (SQLite): {mails} mails received in {posted:.1f} s ({mails / posted:,.0f}/s), "
              f"all journaled after {took:.1f} s: {rate:,.0f} mails/s = {rate / base_rate:.2f}x the baseline")

        reads = one_by_one(p, token, case)
        print(f"baseline: a client reads the case's {mails} messages one by one (GET /api/messages/{{id}}): {reads:,.0f} messages/s")
        for fmt in ("mbox", "eml"):
            size, secs = timed_get(p, token, f"/api/cases/{case}/messages/export?format={fmt}")
            print(f"export {fmt}: {size / 1e6:.1f} MB in {secs:.2f} s ({size / secs / 1e6:,.1f} MB/s): "
                  f"{mails / secs:,.0f} messages/s = {mails / secs / reads:.2f}x the one-by-one reads")
        p.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
