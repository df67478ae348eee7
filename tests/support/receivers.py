"""Real receivers on 127.0.0.1 for notification tests: a webhook HTTP server that records
(and may refuse) what it gets, and an SMTP server (aiosmtpd) that parses the mails."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.live import free_port


class WebhookReceiver:
    """Records every POST as ``(headers, body bytes, answered status)``. ``fail_first`` POSTs
    are answered 500 (then 200), or every one while ``failing`` is True."""

    def __init__(self, *, fail_first: int = 0, failing: bool = False) -> None:
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self.fail_first = fail_first
        self.failing = failing
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    fail = receiver.failing or len(receiver.requests) < receiver.fail_first
                    code = 500 if fail else 200
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, code))
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if fail else b"ok")

            def log_message(self, *args) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted(self) -> list[tuple[dict[str, str], dict]]:
        with self.lock:
            return [(h, json.loads(b)) for h, b, code in self.requests if code == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) keeping each mail as an ``email.message.EmailMessage``."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[email.message.EmailMessage] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                receiver.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()
