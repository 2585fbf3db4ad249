"""A real SMTP server for the test suite and the benchmarks (aiosmtpd).

Every accepted message is stored as one .eml file in --dir, as received (after DATA); every
DATA that begins (finished or not) adds a line to --dir/.data-started, and every MAIL that
arrives with the next commands already behind it (pipelined) a line to --dir/.pipelined;
--dir/.most-sessions holds the most sessions that were ever open at once.
Recipients steer failures, so tests can provoke them:
  reject...@       -> 550 (permanent)
  tempfail-N...@   -> 451 for the first N attempts of that address, then accepted
  tempfail...@     -> 451 always
  slow-N...@       -> accepted, but the reply to the end of DATA comes after N seconds
With --auth USER:PASS, AUTH (PLAIN or LOGIN) with those credentials is required.
PIPELINING (RFC 2920) is offered, as Postfix offers it, unless --no-pipelining is given.
With --refuse-second-ehlo, a second EHLO in a session gets 503 (as OpenSMTPD answers it).
Prints the port it listens on, then serves until killed or until its stdin closes.
"""

import argparse
import asyncio
import os
import socket
import sys
import threading
import time
import uuid

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Sink:
    def __init__(self, directory, pipelining=True, refuse_second_ehlo=False):
        self.directory = directory
        self.pipelining = pipelining
        self.refuse_second_ehlo = refuse_second_ehlo
        self.tries = {}
        self.lock = threading.Lock()
        self.open = 0
        self.most = 0

    def session_opened(self):
        with self.lock:
            self.open += 1
            if self.open > self.most:
                self.most = self.open
                with open(os.path.join(self.directory, ".most-sessions"), "w") as f:
                    f.write(f"{self.most}\n")

    def session_closed(self):
        with self.lock:
            self.open -= 1

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if self.refuse_second_ehlo and session.host_name:
            return ["503 5.5.1 Already identified"]
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # RCPT and DATA already read with MAIL: the client pipelines (marked for the tests).
        if len(getattr(server._reader, "_buffer", b"")) > 0:
            with self.lock, open(os.path.join(self.directory, ".pipelined"), "a") as f:
                f.write("MAIL\n")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject"):
            # Quotes, a backslash, braces and commas: what a server says is kept as said.
            return '550 5.1.1 mailbox unavailable: "{a,b}" \\ NULL'
        if local.startswith("tempfail"):
            parts = local.split("-")
            limit = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
            with self.lock:
                count = self.tries.get(address, 0)
                self.tries[address] = count + 1
            if limit is None or count < limit:
                return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock, open(os.path.join(self.directory, ".data-started"), "a") as f:
            f.write(",".join(envelope.rcpt_tos) + "\n")
        for rcpt in envelope.rcpt_tos:
            parts = rcpt.split("@", 1)[0].lower().split("-")
            if parts[0] == "slow" and len(parts) > 1 and parts[1].isdigit():
                await asyncio.sleep(int(parts[1]))
        name = f"{time.time_ns()}-{uuid.uuid4().hex}.eml"
        tmp = os.path.join(self.directory, "." + name)
        header = (
            "X-Sink-Mail-From: " + (envelope.mail_from or "") + "\r\n"
            + "X-Sink-Rcpt-To: " + ", ".join(envelope.rcpt_tos) + "\r\n"
        ).encode()
        with open(tmp, "wb") as f:
            f.write(header + envelope.original_content)
        os.rename(tmp, os.path.join(self.directory, name))
        return "250 2.0.0 queued as " + name


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountedSMTP(SMTP):
    """A session that tells its handler when it opens and closes."""

    def connection_made(self, transport):
        self.event_handler.session_opened()
        super().connection_made(transport)

    def connection_lost(self, error):
        self.event_handler.session_closed()
        super().connection_lost(error)


class SinkController(Controller):
    def __init__(self, handler, credentials=None, **kwargs):
        self.credentials = credentials
        super().__init__(handler, **kwargs)

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        return AuthResult(success=ok, handled=False)

    def factory(self):
        extra = {}
        if self.credentials:
            extra = {"auth_required": True, "auth_require_tls": False, "authenticator": self.authenticate}
        return CountedSMTP(self.handler, enable_SMTPUTF8=True, decode_data=False, data_size_limit=50 * 1024 * 1024, **extra)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--auth", help="USER:PASS required by AUTH before mail is accepted")
    parser.add_argument("--no-pipelining", action="store_true", help="do not offer PIPELINING")
    parser.add_argument("--refuse-second-ehlo", action="store_true", help="503 to a second EHLO")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    port = args.port or free_port()
    credentials = tuple(args.auth.split(":", 1)) if args.auth else None
    controller = SinkController(Sink(args.dir, pipelining=not args.no_pipelining, refuse_second_ehlo=args.refuse_second_ehlo), credentials=credentials, hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    controller.stop()


if __name__ == "__main__":
    main()
