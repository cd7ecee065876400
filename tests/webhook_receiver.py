#!/usr/bin/env python3
"""A webhook receiver for credwatch's tests, verifying every request with an
independent Standard Webhooks implementation (PyPI `standardwebhooks`).

Usage: webhook_receiver.py --out FILE --secret whsec_... [--secret ...]
                           [--fail-first N] [--status CODE] [--port P]
                           [--cert PEM --key PEM]

Prints "PORT <n>" when listening. Appends one JSON line per request to FILE:
{"id": ..., "answered": status, "verified": [one bool per --secret]}.
Answers 500 to the first N requests (--fail-first), or always --status when
given, else 204.
"""
import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

args = None
lock = threading.Lock()
seen = 0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global seen
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        verified = []
        for secret in args.secret:
            try:
                Webhook(secret).verify(body, headers)
                verified.append(True)
            except WebhookVerificationError:
                verified.append(False)
        with lock:
            seen += 1
            n = seen
        if args.status:
            status = args.status
        elif n <= args.fail_first:
            status = 500
        else:
            status = 204
        with lock, open(args.out, "a") as f:
            f.write(json.dumps({
                "id": headers.get("webhook-id"),
                "answered": status,
                "verified": verified,
                "content_type": headers.get("content-type"),
                "body_id": json.loads(body).get("id") if body else None,
            }) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--secret", action="append", default=[])
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--status", type=int, default=0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--key", help="the certificate's private key (PEM)")
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    if args.cert:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
