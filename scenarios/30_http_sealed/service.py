"""A stand-in for an internal HTTP service: answers every POST with 204 and prints one JSON line
per request (path, headers, body, and whether its Standard Webhooks signature verifies).

    python3 service.py PORT [WHSEC_SECRET]

Standard library only. The signature check is the Standard Webhooks spec's: base64 of
HMAC-SHA256, keyed with the base64 part of the `whsec_` secret, over "<webhook-id>.<webhook-timestamp>.<body>".
"""
import base64
import hashlib
import hmac
import http.server
import json
import sys


def verified(secret, headers, body):
    if not secret:
        return None
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers.get('webhook-id')}.{headers.get('webhook-timestamp')}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1)[-1] for s in headers.get("webhook-signature", "").split()]
    return any(hmac.compare_digest(expected, s) for s in offered)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        line = {
            "path": self.path,
            "headers": headers,
            "body": body.decode("utf-8", "replace"),
            "signature_verified": verified(SECRET, headers, body),
        }
        print(json.dumps(line), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


SECRET = sys.argv[2] if len(sys.argv) > 2 else None
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
