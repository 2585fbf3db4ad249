"""Benchmark driver (standard library only); see bench/run."""

import argparse
import atexit
import concurrent.futures
import http.client
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

KEY = "QkVOQ0hNQVJLLWtleS0zMi1ieXRlcy1sb25nLi4uLi4="  # 32 bytes, benchmark data only

# Every server process started, stopped at exit however the run ends.
STARTED = []
atexit.register(lambda: [p.kill() for p in STARTED if p.poll() is None])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Parley:
    def __init__(self, binary, data_dir, database_url, **extra):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            "PATH": os.environ["PATH"],
            "PARLEY_HTTP_ADDR": f"127.0.0.1:{self.port}",
            "PARLEY_DATA_DIR": data_dir,
            "PARLEY_DATABASE_URL": database_url,
            "PARLEY_MASTER_KEY": KEY,
            "PARLEY_RATE_LIMIT_PER_MINUTE": "0",
            # One case receives every message of the run, at any hour.
            "PARLEY_FREQUENCY_CAP": "off",
            "PARLEY_DEFAULT_CONTACT_HOURS": "off",
            "PARLEY_LOG_LEVEL": "warn",
        }
        self.env.update({k: str(v) for k, v in extra.items()})
        self.binary = binary
        self.proc = subprocess.Popen([binary, "serve"], env=self.env, stdout=open(os.environ.get("BENCH_LOG", "/dev/null"), "a"), stderr=subprocess.STDOUT)
        STARTED.append(self.proc)
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1).read()
                return
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("parley did not start")
                time.sleep(0.05)

    def cli(self, *args):
        out = subprocess.run([self.binary, *args], env=self.env, check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    def request(self, method, path, token, body=None):
        req = urllib.request.Request(self.base + path, method=method, data=json.dumps(body).encode() if body else None)
        req.add_header("Authorization", "Bearer " + token)
        req.add_header("Content-Type", "application/json")
        return json.loads(urllib.request.urlopen(req).read())

    def setup(self):
        party = self.cli("party", "create", "--kind", "creditor", "--name", "Bench Creditor")["partyId"]
        token = self.cli("token", "create", "--party", party)["token"]
        case = self.request("POST", "/api/cases", token, {
            "debtor": {"name": "Example Company ApS", "email": "debtor@example.com", "phone": "+4512345678"},
            "amount": {"value": "15000.00", "currency": "DKK"}, "invoiceNumber": "INV-2024-001"})
        return token, case["caseId"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def wait_port(port, seconds=30):
    deadline = time.time() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline:
                raise RuntimeError(f"nothing listens on {port}")
            time.sleep(0.05)


def to_ms(value):
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n * 1000 if unit == "s" else n


def wrk(url, seconds, script=None, env=None):
    return wrk_result(wrk_start(url, seconds, script, env))


def wrk_start(url, seconds, script=None, env=None, connections=32, threads=2):
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        cmd += ["-s", script]
    return subprocess.Popen(cmd + [url], stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def wrk_result(proc):
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError("wrk failed")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "errors": int(bad.group(1)) if bad else 0}


def send_api(binary, name, database_url, seconds):
    data = tempfile.mkdtemp(prefix="parley-bench-")
    url = database_url or f"sqlite://{data}/parley.db"
    p = Parley(binary, data, url, PARLEY_DELIVERY_CONCURRENCY=0, PARLEY_WEBHOOK_CONCURRENCY=0)
    try:
        token, case = p.setup()
        wrk(p.base + "/healthz", 2)  # warm-up
        base = wrk(p.base + "/healthz", seconds)
        send = wrk(f"{p.base}/api/cases/{case}/messages", seconds, "bench/send.lua", {"PARLEY_BENCH_TOKEN": token})
    finally:
        p.stop()
        shutil.rmtree(data, ignore_errors=True)
    print(f"send API on {name}: {send['rps']:.0f} msg/s accepted, p50 {send['p50']:.2f} ms, p99 {send['p99']:.2f} ms, "
          f"{send['errors']} non-2xx")
    print(f"  /healthz same run: {base['rps']:.0f} req/s, p99 {base['p99']:.2f} ms -> throughput ratio "
          f"{send['rps'] / base['rps']:.4f}, p99 ratio {send['p99'] / base['p99']:.1f}x")
    return send


def pgbench(pgbench_bin, database_url, seconds):
    """One-row INSERT transactions from 8 clients: PostgreSQL's commit rate on this machine."""
    setup = ("CREATE TABLE IF NOT EXISTS bench_rows (id bigserial PRIMARY KEY, a text, b text, c bigint, "
             "payload text); CREATE INDEX IF NOT EXISTS bench_rows_a ON bench_rows (a); "
             "CREATE INDEX IF NOT EXISTS bench_rows_b ON bench_rows (b);")
    subprocess.run([pgbench_bin.replace("pgbench", "psql"), "-q", "-d", database_url, "-c", setup], check=True,
                   stdout=subprocess.DEVNULL)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write("INSERT INTO bench_rows (a, b, c, payload) VALUES (md5(random()::text), md5(random()::text), "
                "1, repeat('x', 400));\n")
        script = f.name
    out = subprocess.run([pgbench_bin, "-n", "-c", "8", "-j", "2", "-T", str(seconds), "-f", script, database_url],
                         check=True, capture_output=True, text=True).stdout
    os.unlink(script)
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


def sqlite_commits(seconds):
    """One ~500-byte row per commit into SQLite (WAL, synchronous=NORMAL): its commit rate here."""
    import sqlite3
    data = tempfile.mkdtemp(prefix="parley-bench-")
    db = sqlite3.connect(os.path.join(data, "raw.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, a TEXT, b TEXT, c INTEGER, payload TEXT)")
    db.execute("CREATE INDEX rows_a ON rows (a)")
    db.execute("CREATE INDEX rows_b ON rows (b)")
    n, t0 = 0, time.time()
    while time.time() - t0 < seconds:
        db.execute("BEGIN")
        db.execute("INSERT INTO rows (a, b, c, payload) VALUES (hex(randomblob(16)), hex(randomblob(16)), 1, ?)",
                   ("x" * 400,))
        db.execute("COMMIT")
        n += 1
    rate = n / (time.time() - t0)
    db.close()
    shutil.rmtree(data, ignore_errors=True)
    return rate


def queue_messages(p, token, case, n, threads=16):
    body = json.dumps({"messageType": "email", "to": "debtor@example.com", "subject": "Payment Reminder",
                       "body": "Dear customer,\n\nThis is a reminder that invoice INV-2024-001 is due.\n\n" + "x" * 1500})

    def worker(count):
        conn = http.client.HTTPConnection("127.0.0.1", p.port)
        for _ in range(count):
            conn.request("POST", f"/api/cases/{case}/messages", body,
                         {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            assert r.status == 201, r.status
        conn.close()

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, [n // threads] * threads))
    return (n // threads) * threads


def sent_count(p, token, case):
    return p.request("GET", f"/api/cases/{case}/messages?status=sent&limit=1", token)["totalCount"]


def wait_sent(p, token, cases, n):
    """Until `n` messages of `cases` are sent. Counting a case's sent messages reads every one
    of them (tens of milliseconds of the database at 16,000), so it is not what is asked every
    tenth of a second: first each case's newest message (one row) until it has left, then the
    count until it is whole."""
    for case in cases:
        newest = p.request("GET", f"/api/cases/{case}/messages?limit=1", token)["messages"]
        while newest and p.request("GET", f"/api/messages/{newest[0]['messageId']}", token)["status"] == "queued":
            time.sleep(0.02)
    while sum(sent_count(p, token, c) for c in cases) < n:
        time.sleep(0.02)


def end_to_end(binary, name, database_url, sink, source, messages):
    port = free_port()
    sink_proc = subprocess.Popen([sink, "-u", "nobody", "-c", f"127.0.0.1:{port}", "1000"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    data = tempfile.mkdtemp(prefix="parley-bench-")
    url = database_url or f"sqlite://{data}/parley.db"
    try:
        t0 = time.time()
        subprocess.run([source, "-s", "20", "-m", "20000", "-l", "2000", f"127.0.0.1:{port}"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        baseline = 20000 / (time.time() - t0)

        queuer = Parley(binary, data, url, PARLEY_DELIVERY_CONCURRENCY=0, PARLEY_WEBHOOK_CONCURRENCY=0)
        token, case = queuer.setup()
        n = queue_messages(queuer, token, case, messages)
        queuer.stop()
        t0 = time.time()
        # A dedicated sender on default settings.
        sender = Parley(binary, data, url, PARLEY_SMTP_URL=f"smtp://127.0.0.1:{port}")
        wait_sent(sender, token, [case], n)
        elapsed = time.time() - t0
        sender.stop()
    finally:
        sink_proc.terminate()
        shutil.rmtree(data, ignore_errors=True)
    rate = n / elapsed
    print(f"end-to-end email on {name}: {n} messages in {elapsed:.1f} s = {rate:.0f} msg/s into smtp-sink")
    print(f"  smtp-source into the same sink: {baseline:.0f} msg/s -> ratio {rate / baseline:.3f}")
    return rate


def together(binary, name, database_url, sink, source, seconds):
    """The API and delivery in one process on default settings: wrk sends for `seconds`,
    then the clock runs until every accepted message has left."""
    port = free_port()
    sink_proc = subprocess.Popen([sink, "-u", "nobody", "-c", f"127.0.0.1:{port}", "1000"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    data = tempfile.mkdtemp(prefix="parley-bench-")
    url = database_url or f"sqlite://{data}/parley.db"
    try:
        t0 = time.time()
        subprocess.run([source, "-s", "20", "-m", "20000", "-l", "2000", f"127.0.0.1:{port}"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        baseline = 20000 / (time.time() - t0)
        p = Parley(binary, data, url, PARLEY_SMTP_URL=f"smtp://127.0.0.1:{port}")
        token, case = p.setup()
        t0 = time.time()
        send = wrk(f"{p.base}/api/cases/{case}/messages", seconds, "bench/send.lua", {"PARLEY_BENCH_TOKEN": token})
        accepted = p.request("GET", f"/api/cases/{case}/messages?limit=1", token)["totalCount"]
        sent_during = sent_count(p, token, case)
        wait_sent(p, token, [case], accepted)
        elapsed = time.time() - t0
        p.stop()
    finally:
        sink_proc.terminate()
        shutil.rmtree(data, ignore_errors=True)
    rate = accepted / elapsed
    print(f"API and delivery in one process on {name}, defaults: {send['rps']:.0f} msg/s accepted (p99 "
          f"{send['p99']:.1f} ms), {sent_during} of {accepted} sent when the load stopped, all sent after "
          f"{elapsed:.1f} s = {rate:.0f} msg/s into smtp-sink")
    print(f"  smtp-source into the same sink: {baseline:.0f} msg/s -> ratio {rate / baseline:.3f}")
    return rate


def nodes(binary, database_url, sink, source, seconds, counts=(1, 2, 3)):
    """Several `parley serve` processes on one PostgreSQL: the send API spread over them
    (32 connections in all, each node its own case), then the accepted messages delivered
    into smtp-sink by as many dedicated senders; each figure against one process's, and
    delivery against smtp-source into the same sink."""
    port = free_port()
    sink_proc = subprocess.Popen([sink, "-u", "nobody", "-c", f"127.0.0.1:{port}", "1000"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    t0 = time.time()
    subprocess.run([source, "-s", "20", "-m", "20000", "-l", "2000", f"127.0.0.1:{port}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    baseline = 20000 / (time.time() - t0)
    first = {}
    try:
        for n in counts:
            db = f"parley_bench_nodes_{n}"
            admin = database_url.rsplit("/", 1)[0] + "/postgres"
            subprocess.run([PSQL, "-q", "-d", admin, "-c", f"DROP DATABASE IF EXISTS {db}", "-c", f"CREATE DATABASE {db}"],
                           check=True, capture_output=True)
            url = database_url.rsplit("/", 1)[0] + "/" + db
            dirs = [tempfile.mkdtemp(prefix="parley-bench-") for _ in range(n)]
            quiet = {"PARLEY_DELIVERY_CONCURRENCY": 0, "PARLEY_WEBHOOK_CONCURRENCY": 0}
            procs = [Parley(binary, dirs[0], url, **quiet)]
            token, _ = procs[0].setup()
            procs += [Parley(binary, d, url, **quiet) for d in dirs[1:]]
            cases = [p.request("POST", "/api/cases", token, {
                "debtor": {"name": "Example Company ApS", "email": "debtor@example.com", "phone": "+4512345678"},
                "amount": {"value": "15000.00", "currency": "DKK"}, "invoiceNumber": f"INV-{i}"})["caseId"]
                for i, p in enumerate(procs)]
            for p, case in zip(procs, cases):
                wrk(f"{p.base}/api/cases/{case}/messages", 1, "bench/send.lua", {"PARLEY_BENCH_TOKEN": token})
            runs = [wrk_start(f"{p.base}/api/cases/{case}/messages", seconds, "bench/send.lua",
                              {"PARLEY_BENCH_TOKEN": token}, connections=max(2, 32 // n), threads=1 if n > 1 else 2)
                    for p, case in zip(procs, cases)]
            results = [wrk_result(r) for r in runs]
            rps = sum(r["rps"] for r in results)
            p99 = max(r["p99"] for r in results)
            errors = sum(r["errors"] for r in results)
            queued = sum(p.request("GET", f"/api/cases/{c}/messages?limit=1", token)["totalCount"]
                         for p, c in zip(procs, cases))
            for p in procs:
                p.stop()
            t0 = time.time()
            senders = [Parley(binary, d, url, PARLEY_SMTP_URL=f"smtp://127.0.0.1:{port}") for d in dirs]
            while sum(sent_count(senders[0], token, c) for c in cases) < queued:
                time.sleep(0.2)
            elapsed = time.time() - t0
            for p in senders:
                p.stop()
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
            rate = queued / elapsed
            first.setdefault("send", rps)
            first.setdefault("delivery", rate)
            print(f"{n} node(s) on one PostgreSQL: send API {rps:.0f} msg/s (p99 {p99:.1f} ms, {errors} non-2xx) = "
                  f"{rps / first['send']:.2f}x one node; {queued} delivered by {n} sender(s) at {rate:.0f} msg/s = "
                  f"{rate / first['delivery']:.2f}x one node, {rate / baseline:.3f}x smtp-source ({baseline:.0f}/s)")
    finally:
        sink_proc.terminate()


# The capacity model of docs/SCALE.md: 10 million debtors, 100 million messages a month, the
# peak hour ten times the mean hour.
MODEL_DEBTORS = 10_000_000
MODEL_MONTH = 100_000_000
MODEL_PEAK = 10
# Its mix: email and SMS by 7 to 3, one reply (an SMS) to every 20 messages.
EMAIL_SHARE = 0.7
REPLY_SHARE = 0.05
# The large tables, whose rows grow with the messages.
GROWING = ["messages", "message_events", "audit_log", "events", "webhook_deliveries", "pending_work", "jobs",
           "job_attempts", "message_copies", "inbound_raw", "thread_participants", "threads"]
# Months of rows a table holds at most: finished webhook work is forgotten after
# PARLEY_WEBHOOK_RETENTION (30 days by default); everything else is kept five years.
KEPT_MONTHS = {"events": 1, "webhook_deliveries": 1}


def psql_value(url, sql):
    out = subprocess.run([PSQL, "-qtA", "-d", url, "-c", sql], check=True, capture_output=True, text=True).stdout
    return out.strip()


def parallel(n, threads, one):
    """Calls `one(i)` for i in 0..n on `threads` threads; each thread's latencies (s)."""
    def worker(t):
        times = []
        for i in range(t, n, threads):
            t0 = time.perf_counter()
            one(i)
            times.append(time.perf_counter() - t0)
        return times

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return sorted(x for times in pool.map(worker, range(threads)) for x in times)


def scale_setup(p, hooks, cases, creditors):
    """An admin, `creditors` creditors each with a webhook into `hooks`, and `cases` cases
    spread over them, each debtor with an address and a number of its own."""
    admin_party = p.cli("party", "create", "--kind", "admin", "--name", "Operations")["partyId"]
    admin = p.cli("token", "create", "--party", admin_party)["token"]
    tokens = []
    for c in range(creditors):
        party = p.cli("party", "create", "--kind", "creditor", "--name", f"Creditor {c}")["partyId"]
        token = p.cli("token", "create", "--party", party)["token"]
        p.request("POST", "/api/webhooks", token, {"url": hooks + "/hook",
                                                   "events": ["message.sent", "message.received"]})
        tokens.append(token)
    case_ids = [None] * cases

    def new_case(i):
        case_ids[i] = p.request("POST", "/api/cases", tokens[i % creditors], {
            "debtor": {"name": f"Debtor {i}", "email": f"debtor{i}@example.com", "phone": f"+4520{i:06d}"},
            "amount": {"value": "15000.00", "currency": "DKK"}, "invoiceNumber": f"INV-{i}"})["caseId"]

    parallel(cases, 16, new_case)
    return admin, tokens, case_ids


def scale(binary, database_url, sink, source, pgbench_bin, fraction=100, cases=2000, creditors=10):
    """The 1/`fraction` simulation of docs/SCALE.md: the model's peak hour (its messages, their
    replies, a webhook for every creditor) sent to one `parley serve` on defaults as fast as it
    takes them, then the clock runs until every message has left and every webhook has arrived.
    Prints the rate against the model's peak, and each large table's rows and bytes a message,
    scaled to the model's month and five years."""
    peak_hour = MODEL_MONTH / (30 * 24) * MODEL_PEAK
    n = round(peak_hour / fraction)
    replies = round(n * REPLY_SHARE)
    port = free_port()
    sink_proc = subprocess.Popen([sink, "-u", "nobody", "-c", f"127.0.0.1:{port}", "1000"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    receiver = subprocess.Popen(["node", "bench/receiver.js"], stdout=subprocess.PIPE, text=True)
    hooks = f"http://127.0.0.1:{int(receiver.stdout.readline())}"
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    subprocess.run([PSQL, "-q", "-d", admin_url, "-c", "DROP DATABASE IF EXISTS parley_bench_scale",
                    "-c", "CREATE DATABASE parley_bench_scale"], check=True, capture_output=True)
    url = database_url.rsplit("/", 1)[0] + "/parley_bench_scale"
    data = tempfile.mkdtemp(prefix="parley-bench-")
    try:
        t0 = time.time()
        subprocess.run([source, "-s", "20", "-m", "20000", "-l", "2000", f"127.0.0.1:{port}"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        baseline = 20000 / (time.time() - t0)
        tps = pgbench(pgbench_bin, url, 5)
        psql_value(url, "DROP TABLE bench_rows")
        # SMS from a sender that takes the model's rate (a short code or a pool of numbers: one
        # long number, paced at its default of 1 a second, would take a whole hour for 3,600).
        p = Parley(binary, data, url, PARLEY_SMTP_URL=f"smtp://127.0.0.1:{port}", PARLEY_WEBHOOK_ALLOW_PRIVATE="true",
                   PARLEY_SMS_RATE_PER_SECOND=10_000)
        admin, tokens, case_ids = scale_setup(p, hooks, cases, creditors)
        commits0 = int(psql_value(url, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
        wal0 = psql_value(url, "SELECT pg_current_wal_lsn()")
        local = threading.local()

        def call(method, path, body, headers):
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPConnection("127.0.0.1", p.port)
            local.conn.request(method, path, body, headers)
            r = local.conn.getresponse()
            r.read()
            assert r.status < 300, (path, r.status)

        def send(k):
            i = (k * 7919) % cases
            if (k % 10) < EMAIL_SHARE * 10:
                body = {"messageType": "email", "to": f"debtor{i}@example.com",
                        "subject": "Payment Reminder - Invoice INV-%d" % i,
                        "body": "Dear customer,\n\nThis is a reminder that invoice INV-%d is due." % i}
            else:
                body = {"messageType": "sms", "to": f"+4520{i:06d}",
                        "body": "Reminder: invoice INV-%d of DKK 15,000.00 is due." % i}
            call("POST", f"/api/cases/{case_ids[i]}/messages", json.dumps(body),
                 {"Authorization": "Bearer " + tokens[i % creditors], "Content-Type": "application/json"})

        texts = ["Jeg betaler 500 kr. på fredag", "Can I pay in instalments?", "Tak, jeg har betalt i går",
                 "Hvornår skal jeg betale?"]

        def reply(k):
            i = (k * 7919) % cases
            form = urllib.parse.urlencode({"From": f"+4520{i:06d}", "To": "+4570000000", "Body": texts[k % 4],
                                           "MessageSid": f"SMbench{k}", "AccountSid": "AC1"})
            call("POST", "/api/inbound/sms", form,
                 {"Authorization": "Bearer " + admin, "Content-Type": "application/x-www-form-urlencoded"})

        t0 = time.time()
        latencies = parallel(n, 32, send)
        accepted_after = time.time() - t0
        parallel(replies, 8, reply)
        offered = time.time() - t0
        outbound = "SELECT count(*) FROM messages WHERE direction = 'outbound' AND status IN ('sent', 'delivered')"
        while int(psql_value(url, outbound)) < n or int(urllib.request.urlopen(hooks + "/count").read()) < n + replies:
            if time.time() - t0 > 900:
                raise RuntimeError("the simulated hour did not finish")
            time.sleep(0.2)
        elapsed = time.time() - t0
        p.stop()
        commits = int(psql_value(url, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
        wal = int(psql_value(url, f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{wal0}')"))
        settle(url)
        # A partitioned table's bytes are its partitions' (the history, migration 0030).
        size = ("SELECT pg_total_relation_size('{0}') + coalesce((SELECT sum(pg_total_relation_size(relid)) "
                "FROM pg_partition_tree('{0}') WHERE isleaf), 0)")
        sizes = {t: (int(psql_value(url, f"SELECT count(*) FROM {t}")),
                     int(psql_value(url, size.format(t)))) for t in GROWING}
        case_bytes = sum(int(psql_value(url, f"SELECT pg_total_relation_size('{t}')"))
                         for t in ("cases", "preferences", "key_material"))
    finally:
        sink_proc.terminate()
        receiver.terminate()
        shutil.rmtree(data, ignore_errors=True)
    scale_report(dict(n=n, replies=replies, fraction=fraction, cases=cases, creditors=creditors,
                      accepted_after=accepted_after, latencies=latencies, elapsed=elapsed, baseline=baseline,
                      tps=tps, commits=commits - commits0, wal=wal, sizes=sizes, case_bytes=case_bytes))


def scale_report(r):
    """What `scale` measured, against the model's peak and scaled to its month and five years."""
    n, replies, fraction, cases, creditors = r["n"], r["replies"], r["fraction"], r["cases"], r["creditors"]
    accepted_after, latencies, elapsed = r["accepted_after"], r["latencies"], r["elapsed"]
    baseline, tps, commits, wal, sizes, case_bytes = (r["baseline"], r["tps"], r["commits"], r["wal"], r["sizes"],
                                                      r["case_bytes"])
    peak_hour = MODEL_MONTH / (30 * 24) * MODEL_PEAK
    rate = (n + replies) / elapsed
    peak_rate = peak_hour * (1 + REPLY_SHARE) / 3600
    print(f"scale, 1/{fraction} of the model's peak hour on PostgreSQL: {n} messages ({EMAIL_SHARE:.0%} email) and "
          f"{replies} SMS replies to {cases} cases of {creditors} creditors, each creditor with a webhook")
    print(f"  accepted in {accepted_after:.1f} s (p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, p99 "
          f"{latencies[int(len(latencies) * 0.99)] * 1e3:.1f} ms), every message sent and every webhook "
          f"({n + replies}) arrived after {elapsed:.1f} s: {rate:.0f} messages/s through one process, "
          f"{rate / peak_rate:.2f}x the model's peak ({peak_rate:.0f}/s); the hour took {elapsed / 36:.2f} % of an hour "
          f"at 1/{fraction}")
    print(f"  smtp-source into the same sink: {baseline:.0f}/s; pgbench one-row commits: {tps:.0f}/s")
    print(f"  PostgreSQL: {commits / (n + replies):.2f} commits and {wal / (n + replies) / 1024:.1f} KiB "
          f"of WAL a message -> at the peak {commits / (n + replies) * peak_rate:.0f} commits/s "
          f"({commits / (n + replies) * peak_rate / tps:.2f}x pgbench here), "
          f"{wal / (n + replies) * peak_rate / 2**20:.1f} MiB/s of WAL")
    print(f"  {'table':<20} {'rows/msg':>9} {'bytes/msg':>10} {'rows/month':>13} {'GiB/month':>10} "
          f"{'GiB in 5 years':>15}")
    month_total = kept_total = 0.0
    for t, (rows, size) in sizes.items():
        per_rows, per_bytes = rows / n, size / n
        month = per_bytes * MODEL_MONTH / 2**30
        kept = month * KEPT_MONTHS.get(t, 60)
        month_total += month
        kept_total += kept
        print(f"  {t:<20} {per_rows:>9.2f} {per_bytes:>10.0f} {per_rows * MODEL_MONTH:>13,.0f} {month:>10.1f} "
              f"{kept:>15,.0f}{' (kept 30 days)' if t in KEPT_MONTHS else ''}")
    print(f"  {'all of them':<20} {'':>9} {'':>10} {'':>13} {month_total:>10.1f} {kept_total:>15,.0f}")
    print(f"  cases with their preferences and keys: {case_bytes / cases:.0f} bytes a case -> "
          f"{case_bytes / cases * MODEL_DEBTORS / 2**30:.1f} GiB for {MODEL_DEBTORS:,} debtors")




def post_notes(p, token, case, n, threads=16):
    body = json.dumps({"note": "Called the debtor; promised to pay on Friday.", "tags": ["call"]})

    def worker(count):
        conn = http.client.HTTPConnection("127.0.0.1", p.port)
        for _ in range(count):
            conn.request("POST", f"/api/cases/{case}/notes", body,
                         {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            assert r.status == 201, r.status
        conn.close()

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, [n // threads] * threads))
    return (n // threads) * threads


def webhooks(binary, name, database_url, seconds, events):
    """Webhook deliveries into a local receiver (Node.js), against wrk posting the same
    shape of request straight to it: `events` notes are written first with no dispatcher,
    then a process on default settings fans them out and delivers them."""
    receiver = subprocess.Popen(["node", "bench/receiver.js"], stdout=subprocess.PIPE, text=True)
    port = int(receiver.stdout.readline())
    target = f"http://127.0.0.1:{port}"
    data = tempfile.mkdtemp(prefix="parley-bench-")
    url = database_url or f"sqlite://{data}/parley.db"
    try:
        base = wrk(target + "/", seconds, "bench/webhook.lua")
        before = int(urllib.request.urlopen(target + "/count").read())
        writer = Parley(binary, data, url, PARLEY_DELIVERY_CONCURRENCY=0, PARLEY_WEBHOOK_CONCURRENCY=0, PARLEY_WEBHOOK_ALLOW_PRIVATE="true")
        token, case = writer.setup()
        writer.request("POST", "/api/webhooks", token, {"url": target + "/hook", "events": ["note.created"]})
        n = post_notes(writer, token, case, events)
        writer.stop()
        t0 = time.time()
        sender = Parley(binary, data, url, PARLEY_WEBHOOK_ALLOW_PRIVATE="true")
        while int(urllib.request.urlopen(target + "/count").read()) - before < n:
            if time.time() - t0 > 300:
                raise RuntimeError("webhook deliveries did not arrive")
            time.sleep(0.05)
        elapsed = time.time() - t0
        sender.stop()
    finally:
        receiver.terminate()
        shutil.rmtree(data, ignore_errors=True)
    rate = n / elapsed
    print(f"webhooks on {name}: {n} deliveries in {elapsed:.1f} s = {rate:.0f}/s into the receiver")
    print(f"  wrk -c32 posting the same request to it: {base['rps']:.0f}/s -> ratio {rate / base['rps']:.3f}")
    return rate


def uploads(binary, name, database_url, size_mib):
    """One document of `size_mib` MiB uploaded with curl, against dd writing (and syncing) as
    much to the same disk; the server's peak resident memory from /proc (VmHWM)."""
    data = tempfile.mkdtemp(prefix="parley-bench-")
    url = database_url or f"sqlite://{data}/parley.db"
    source = os.path.join(data, "upload.bin")
    try:
        with open(source, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(size_mib):
                f.write(block)
        t0 = time.time()
        subprocess.run(["dd", "if=/dev/zero", f"of={os.path.join(data, 'dd.bin')}", "bs=1M", f"count={size_mib}",
                        "conv=fdatasync"], check=True, capture_output=True)
        disk = size_mib / (time.time() - t0)
        os.unlink(os.path.join(data, "dd.bin"))
        p = Parley(binary, data, url, PARLEY_DELIVERY_CONCURRENCY=0, PARLEY_WEBHOOK_CONCURRENCY=0,
                   PARLEY_MAX_UPLOAD_BYTES=str((size_mib + 1) << 20))
        token, case = p.setup()
        t0 = time.time()
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {token}",
                              "-F", f"file=@{source}", "-F", "documentType=other",
                              f"{p.base}/api/cases/{case}/documents"], check=True, capture_output=True, text=True).stdout
        elapsed = time.time() - t0
        assert out == "201", out
        with open(f"/proc/{p.proc.pid}/status") as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
        p.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    rate = size_mib / elapsed
    print(f"upload on {name}: {size_mib} MiB in {elapsed:.1f} s = {rate:.0f} MiB/s, server peak RSS {peak:.0f} MB")
    print(f"  dd to the same disk (fdatasync): {disk:.0f} MiB/s -> ratio {rate / disk:.2f}")
    return rate


def drives(binary, size_mib):
    """A document of `size_mib` MiB uploaded with a drive connector on, then mirrored through
    each service's upload session into bench/drive_fake.py, against the fake's own intake
    (the same parts on one kept connection); parley's peak resident memory (VmHWM) over the
    upload and the mirror."""
    key = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                         check=True, capture_output=True, text=True).stdout
    parts = {"sharepoint": 10, "google_drive": 10, "box": 8, "dropbox": 8}
    for kind, part_mib in parts.items():
        data = tempfile.mkdtemp(prefix="parley-bench-")
        source = os.path.join(data, "upload.bin")
        port = free_port()
        fake = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "drive_fake.py"), str(port)])
        try:
            wait_port(port)
            base = f"http://127.0.0.1:{port}"
            intake = float(subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "drive_fake.py"),
                                           str(port), kind, str(size_mib), str(part_mib)],
                                          check=True, capture_output=True, text=True).stdout)
            with open(source, "wb") as f:
                block = os.urandom(1 << 20)
                for _ in range(size_mib):
                    f.write(block)
            p = Parley(binary, data, f"sqlite://{data}/parley.db", PARLEY_WEBHOOK_CONCURRENCY=0,
                       PARLEY_MAX_UPLOAD_BYTES=str((size_mib + 1) << 20))
            token, case = p.setup()
            admin = p.cli("party", "create", "--kind", "admin", "--name", "Bench Admin")["partyId"]
            admin_token = p.cli("token", "create", "--party", admin)["token"]
            settings = {
                "sharepoint": {"tenantId": "t", "clientId": "c", "clientSecret": "s", "driveId": "d",
                               "graphUrl": base, "loginUrl": base},
                "google_drive": {"serviceAccount": {"client_email": "bench@p.iam.gserviceaccount.com",
                                                    "private_key": key, "token_uri": base + "/token"},
                                 "folderId": "root", "apiUrl": base},
                "box": {"clientId": "c", "clientSecret": "s", "enterpriseId": "1", "folderId": "0",
                        "apiUrl": base, "uploadUrl": base},
                "dropbox": {"appKey": "k", "appSecret": "s", "refreshToken": "r", "apiUrl": base,
                            "contentUrl": base},
            }[kind]
            p.request("POST", "/api/connectors", admin_token, {"type": kind, "name": kind, "settings": settings})
            out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {token}",
                                  "-F", f"file=@{source}", "-F", "documentType=other",
                                  f"{p.base}/api/cases/{case}/documents"], check=True, capture_output=True, text=True).stdout
            assert out == "201", out
            t0 = time.time()
            while True:
                done = json.loads(urllib.request.urlopen(base + "/_done").read())
                if done["bytes"] >= size_mib << 20:
                    break
                if time.time() - t0 > 1800:
                    raise RuntimeError(f"{kind}: the mirror did not finish")
                time.sleep(0.2)
            elapsed = time.time() - t0
            with open(f"/proc/{p.proc.pid}/status") as f:
                peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
            p.stop()
        finally:
            fake.terminate()
            shutil.rmtree(data, ignore_errors=True)
        rate = size_mib / elapsed
        print(f"mirror to {kind}: {size_mib} MiB in {elapsed:.1f} s = {rate:.0f} MiB/s "
              f"(the fake's own intake in {part_mib} MiB parts: {intake:.0f} MiB/s -> ratio {rate / intake:.2f}); "
              f"peak RSS over the upload and the mirror {peak:.0f} MB")


def crms(binary, messages):
    """`messages` emails sent with a CRM connector on (its worker off), then logged by a
    process on defaults into bench/crm_fake.py, in each CRM's batches; against the fake's own
    intake (the same batches posted on one kept connection)."""
    key = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                         check=True, capture_output=True, text=True).stdout
    fake_py = os.path.join(os.path.dirname(__file__), "crm_fake.py")
    for kind in ["salesforce", "dynamics365", "hubspot"]:
        data = tempfile.mkdtemp(prefix="parley-bench-")
        url = f"sqlite://{data}/parley.db"
        port = free_port()
        fake = subprocess.Popen([sys.executable, fake_py, str(port)])
        try:
            wait_port(port)
            base = f"http://127.0.0.1:{port}"
            intake = float(subprocess.run([sys.executable, fake_py, str(port), kind, str(messages)],
                                          check=True, capture_output=True, text=True).stdout)
            before = json.loads(urllib.request.urlopen(base + "/_done").read())["activities"]
            settings = {
                "salesforce": {"loginUrl": base, "clientId": "c", "username": "u@bench.example", "privateKey": key},
                "dynamics365": {"tenantId": "t", "clientId": "c", "clientSecret": "s", "environmentUrl": base,
                                "loginUrl": base},
                "hubspot": {"accessToken": "pat-bench", "apiUrl": base},
            }[kind]
            queuer = Parley(binary, data, url, PARLEY_CRM_CONCURRENCY=0, PARLEY_WEBHOOK_CONCURRENCY=0)
            token, case = queuer.setup()
            admin = queuer.cli("party", "create", "--kind", "admin", "--name", "Bench Admin")["partyId"]
            admin_token = queuer.cli("token", "create", "--party", admin)["token"]
            queuer.request("POST", "/api/connectors", admin_token, {"type": kind, "name": kind, "settings": settings})
            n = queue_messages(queuer, token, case, messages)
            while sent_count(queuer, token, case) < n:
                time.sleep(0.1)
            queuer.stop()
            t0 = time.time()
            logger = Parley(binary, data, url, PARLEY_WEBHOOK_CONCURRENCY=0)
            while json.loads(urllib.request.urlopen(base + "/_done").read())["activities"] < before + n:
                if time.time() - t0 > 600:
                    raise RuntimeError(f"{kind}: the activities were not all logged")
                time.sleep(0.05)
            elapsed = time.time() - t0
            logger.stop()
        finally:
            fake.terminate()
            shutil.rmtree(data, ignore_errors=True)
        rate = n / elapsed
        print(f"crm {kind}: {n} activities logged in {elapsed:.1f} s = {rate:.0f}/s "
              f"(the fake's own intake in the same batches: {intake:.0f}/s -> ratio {rate / intake:.2f})")


def latency(port, token, path, samples, warm=20):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    for i in range(samples + warm):
        t0 = time.perf_counter()
        conn.request("GET", path(i), headers={"Authorization": "Bearer " + token})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        if i >= warm:  # the first ones warm the caches
            times.append((time.perf_counter() - t0) * 1000)
    conn.close()
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99) - 1]


PSQL = "psql"


def settle(url):
    """A database at rest before its lists are timed, at every size alike: what the seed wrote
    checkpointed, and on PostgreSQL vacuumed and analysed (what autovacuum would otherwise be
    doing, a million rows just written, while the requests are timed)."""
    if url.startswith("postgres"):
        subprocess.run([PSQL, "-q", "-d", url, "-c", "VACUUM ANALYZE", "-c", "CHECKPOINT"], check=True)
    else:
        path = url.removeprefix("sqlite://").split("?")[0]
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def lists(binary, seed, name, database_url, messages, samples=400, bulk=False):
    """List latency with `messages` messages in 10,000 cases of 100 creditors (more past a
    million messages), 100 messages to a case (the first creditor's cases first: those asked
    about), seeded through the
    library's write path; one client asking in turn. The cases asked about hold as many
    messages at every size, so the figures differ by the size of the database alone."""
    data = tempfile.mkdtemp(prefix="parley-bench-")
    url = database_url or f"sqlite://{data}/parley.db"
    env = {"PATH": os.environ["PATH"], "PARLEY_DATA_DIR": data, "PARLEY_DATABASE_URL": url, "PARLEY_MASTER_KEY": KEY,
           "PARLEY_LOG_LEVEL": "warn"}
    try:
        t0 = time.time()
        # 100 messages a case at every size: 10,000 cases, more past a million messages.
        out = subprocess.run([seed, "--creditors", "100", "--cases", str(max(10_000, messages // 100)),
                              "--messages", str(messages), "--per-case", "100"] + (["--bulk"] if bulk else []), env=env,
                             check=True, capture_output=True, text=True).stdout
        seeded = time.time() - t0
        settle(url)
        info = json.loads(out)
        token, cases = info["token"], info["cases"]
        p = Parley(binary, data, url, PARLEY_DELIVERY_CONCURRENCY=0, PARLEY_WEBHOOK_CONCURRENCY=0)
        paths = {
            "messages of a case": lambda i: f"/api/cases/{cases[i % len(cases)]}/messages",
            "  type=email&direction=outbound": lambda i: f"/api/cases/{cases[i % len(cases)]}/messages?type=email&direction=outbound",
            "  type=sms&status=queued": lambda i: f"/api/cases/{cases[i % len(cases)]}/messages?type=sms&status=queued",
            "cases of a creditor": lambda i: "/api/cases",
            "threads of a case": lambda i: f"/api/cases/{cases[i % len(cases)]}/threads",
        }
        results = {k: latency(p.port, token, f, samples) for k, f in paths.items()}
        p.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    how = "the rest copied by the database" if bulk else "through the write path"
    print(f"lists on {name} with {messages} messages (seeded in {seeded:.0f} s, {how}), one client, {samples} requests each:")
    for k, (p50, p99) in results.items():
        print(f"  {k}: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    return results


def lists_compare(binary, seed, name, database_url, small_url, big, bulk=False):
    small = lists(binary, seed, name, small_url, 10_000)
    large = lists(binary, seed, name, database_url, big, bulk=bulk)
    worst = max(large[k][1] / max(small[k][1], 0.01) for k in small)
    print(f"  lists at {big} against 10000 messages: worst p99 ratio {worst:.2f}x")


def thread_sizes(binary, seed, name, postgres, messages=100_000, samples=200):
    """A case's threads listed where a case holds 100 messages and where it holds 10,000, the
    same number of messages in the database (the seed's cases alternate: an SMS case is one
    thread, an email case seven, one a subject): the list reads its threads' counts and latest
    times from an index, so its time should grow far more slowly than the case."""
    results = {}
    for per_case in (100, 10_000):
        data = tempfile.mkdtemp(prefix="parley-bench-")
        url = f"sqlite://{data}/parley.db"
        if postgres:
            db = f"parley_bench_threads_{per_case}"
            url = postgres.rsplit("/", 1)[0] + "/" + db
            subprocess.run([PSQL, "-q", "-d", postgres, "-c", "SET client_min_messages = warning", "-c", f"DROP DATABASE IF EXISTS {db}", "-c",
                            f"CREATE DATABASE {db}"], check=True)
        env = {"PATH": os.environ["PATH"], "PARLEY_DATA_DIR": data, "PARLEY_DATABASE_URL": url,
               "PARLEY_MASTER_KEY": KEY, "PARLEY_LOG_LEVEL": "warn"}
        try:
            out = subprocess.run([seed, "--creditors", "1", "--cases", str(messages // per_case), "--messages",
                                  str(messages), "--per-case", str(per_case)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            settle(url)
            info = json.loads(out)
            token, cases = info["token"], info["cases"]
            p = Parley(binary, data, url, PARLEY_DELIVERY_CONCURRENCY=0, PARLEY_WEBHOOK_CONCURRENCY=0)
            results[per_case] = latency(p.port, token, lambda i: f"/api/cases/{cases[i % len(cases)]}/threads",
                                        samples)
            p.stop()
        finally:
            shutil.rmtree(data, ignore_errors=True)
    (s50, s99), (b50, b99) = results[100], results[10_000]
    print(f"threads of a case on {name}, {messages} messages, one client, {samples} requests each:")
    print(f"  cases of 100 messages: p50 {s50:.2f} ms, p99 {s99:.2f} ms")
    print(f"  cases of 10000 messages: p50 {b50:.2f} ms, p99 {b99:.2f} ms -> p50 ratio {b50 / s50:.1f}x "
          f"for 100x the messages")


def history(binary, postgres, months=60, rows=1_000_000, samples=400):
    """The partitioned history on PostgreSQL: a case's audit log (read across every month)
    and a message's delivery report (its events read from its message's month) timed with
    this month's partitions alone, then again after `rows` audit entries and `rows` message
    events spread over the `months` before it were sorted into their months by the
    partition keeper's first round (the rows written where no month held them, as after a
    keeper that did not run for years)."""
    db = "parley_bench_history"
    url = postgres.rsplit("/", 1)[0] + "/" + db
    subprocess.run([PSQL, "-q", "-d", postgres, "-c", "SET client_min_messages = warning", "-c",
                    f"DROP DATABASE IF EXISTS {db}", "-c", f"CREATE DATABASE {db}"], check=True)
    data = tempfile.mkdtemp(prefix="parley-bench-")
    try:
        p = Parley(binary, data, url)
        token, case = p.setup()
        ids = [p.request("POST", f"/api/cases/{case}/messages", token,
                         {"messageType": "email", "to": "debtor@example.com", "subject": "Reminder",
                          "body": "Please pay."})["messageId"] for _ in range(20)]
        paths = {
            "audit log of a case": lambda i: f"/api/cases/{case}/audit-log",
            "delivery report of a message": lambda i: f"/api/messages/{ids[i % len(ids)]}/delivery-report",
        }
        settle(url)
        before = {k: latency(p.port, token, f, samples) for k, f in paths.items()}
        p.stop()
        month_s = 2_629_746  # a mean month
        psql_value(url, f"""
            INSERT INTO audit_log (case_id, actor_name, action, target_type, target_id, at)
            SELECT CASE WHEN g % 1000 = 0 THEN '{case}' ELSE 'other-' || (g % 10000) END, 'bench',
                   'case.updated', 'case', 't' || g,
                   ((extract(epoch FROM date_trunc('month', now())) - 86400 - (g % {months}) * {month_s}) * 1000000)::bigint
            FROM generate_series(1, {rows}) g""")
        psql_value(url, f"""
            INSERT INTO message_events (message_id, event, at)
            SELECT 'msg_' || lpad(to_hex(((extract(epoch FROM date_trunc('month', now())) - 86400
                     - (g % {months}) * {month_s}) * 1000)::bigint), 12, '0') || lpad(to_hex(g), 20, '0'),
                   'sent', 0
            FROM generate_series(1, {rows}) g""")
        # The raw limit of the same work: the same rows copied once, by the database alone.
        c0 = time.time()
        psql_value(url, "CREATE TABLE bench_copy_a AS SELECT * FROM audit_log_default; "
                        "CREATE TABLE bench_copy_m AS SELECT * FROM message_events_default; "
                        "DROP TABLE bench_copy_a, bench_copy_m")
        copied = 2 * rows / (time.time() - c0)
        t0 = time.time()
        p = Parley(binary, data, url)
        made = ("SELECT count(*) FROM pg_inherits WHERE inhparent IN ('audit_log'::regclass, 'message_events'::regclass)")
        left = "SELECT (SELECT count(*) FROM audit_log_default) + (SELECT count(*) FROM message_events_default)"
        while int(psql_value(url, left)) > 0:
            if time.time() - t0 > 900:
                raise RuntimeError("the partition keeper did not sort the history")
            time.sleep(0.2)
        sorted_after = time.time() - t0
        partitions = int(psql_value(url, made))
        settle(url)
        after = {k: latency(p.port, token, f, samples) for k, f in paths.items()}
        # Again, every pooled connection warmed first (each builds the catalog entries of
        # the partitions once).
        warmed = {k: latency(p.port, token, f, samples, warm=200) for k, f in paths.items()}
        p.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    print(f"history on PostgreSQL: {rows} audit entries and {rows} message events over the {months} months before "
          f"this one, sorted into their months by the keeper's first round in {sorted_after:.1f} s "
          f"({2 * rows / sorted_after:.0f} rows/s; {partitions} partitions of the two tables; the same rows copied "
          f"once by the database: {copied:.0f} rows/s -> ratio {2 * rows / sorted_after / copied:.2f}), one client, "
          f"{samples} requests each:")
    for k in paths:
        (b50, b99), (a50, a99), (w50, w99) = before[k], after[k], warmed[k]
        print(f"  {k}: this month alone p50 {b50:.2f} ms, p99 {b99:.2f} ms; with {months} months "
              f"p50 {a50:.2f} ms, p99 {a99:.2f} ms -> p99 ratio {a99 / max(b99, 0.01):.2f}x; "
              f"asked again: p50 {w50:.2f} ms, p99 {w99:.2f} ms -> {w99 / max(b99, 0.01):.2f}x")


PARTS = ["send-sqlite", "send-postgres", "e2e-sqlite", "e2e-postgres", "together-sqlite", "together-postgres",
         "webhooks-sqlite", "webhooks-postgres", "upload", "drives", "crm", "lists-sqlite", "lists-postgres",
         "nodes-postgres", "scale-postgres", "threads-sqlite", "threads-postgres", "history-postgres"]


def main():
    global PSQL
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--postgres", required=True)
    parser.add_argument("--postgres-e2e", required=True)
    parser.add_argument("--postgres-together", required=True)
    parser.add_argument("--postgres-webhooks", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--pgbench", required=True)
    parser.add_argument("--upload-mib", type=int, default=1024)
    parser.add_argument("--seed", required=True)
    parser.add_argument("--list-messages", type=int, default=1_000_000)
    parser.add_argument("--bulk-seed", action="store_true",
                        help="lists-postgres: copy the messages no list asks about in the database (bench/seed.rs --bulk)")
    parser.add_argument("--postgres-lists", required=True)
    parser.add_argument("--postgres-lists-small", required=True)
    parser.add_argument("--only", action="append", choices=PARTS, help="run only these parts (repeatable)")
    args = parser.parse_args()
    PSQL = args.pgbench.replace("pgbench", "psql")
    parts = args.only or PARTS
    print(f"machine: {os.cpu_count()} cores; wrk -t2 -c32 -d{args.seconds}s; load generator and server share the cores")
    if "send-sqlite" in parts:
        send = send_api(args.binary, "SQLite", None, args.seconds)
        raw = sqlite_commits(args.seconds)
        print(f"  raw SQLite one-row commits same run: {raw:.0f}/s -> ratio {send['rps'] / raw:.3f}")
    if "send-postgres" in parts:
        send = send_api(args.binary, "PostgreSQL", args.postgres, args.seconds)
        tps = pgbench(args.pgbench, args.postgres, args.seconds)
        print(f"  pgbench one-row INSERT commits, 8 clients, same run: {tps:.0f}/s -> ratio {send['rps'] / tps:.3f}")
    if "e2e-sqlite" in parts:
        end_to_end(args.binary, "SQLite", None, args.sink, args.source, args.messages)
    if "e2e-postgres" in parts:
        end_to_end(args.binary, "PostgreSQL", args.postgres_e2e, args.sink, args.source, args.messages)
    if "together-sqlite" in parts:
        together(args.binary, "SQLite", None, args.sink, args.source, args.seconds)
    if "together-postgres" in parts:
        together(args.binary, "PostgreSQL", args.postgres_together, args.sink, args.source, args.seconds)
    if "webhooks-sqlite" in parts:
        webhooks(args.binary, "SQLite", None, args.seconds, args.messages)
    if "webhooks-postgres" in parts:
        webhooks(args.binary, "PostgreSQL", args.postgres_webhooks, args.seconds, args.messages)
    if "upload" in parts:
        uploads(args.binary, "SQLite", None, args.upload_mib)
    if "drives" in parts:
        drives(args.binary, args.upload_mib)
    if "crm" in parts:
        crms(args.binary, args.messages)
    if "nodes-postgres" in parts:
        nodes(args.binary, args.postgres, args.sink, args.source, args.seconds)
    if "scale-postgres" in parts:
        scale(args.binary, args.postgres, args.sink, args.source, args.pgbench)
    if "history-postgres" in parts:
        history(args.binary, args.postgres)
    if "threads-sqlite" in parts:
        thread_sizes(args.binary, args.seed, "SQLite", None)
    if "threads-postgres" in parts:
        thread_sizes(args.binary, args.seed, "PostgreSQL", args.postgres)
    if "lists-sqlite" in parts:
        lists_compare(args.binary, args.seed, "SQLite", None, None, args.list_messages)
    if "lists-postgres" in parts:
        lists_compare(args.binary, args.seed, "PostgreSQL", args.postgres_lists, args.postgres_lists_small,
                      args.list_messages, bulk=args.bulk_seed)


if __name__ == "__main__":
    main()
