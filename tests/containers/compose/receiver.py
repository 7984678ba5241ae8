"""A webhook receiver that applies each action once: it dedups by the Idempotency-Key header.

Run by the compose test in the connector image (python3 receiver.py, port 8080).
POST any path: record one delivery of the key; the first delivery of a key is applied
(its payload value kept). GET /stats: deliveries, distinct keys, the deliveries repeated
under a key already seen, and the applied payload values.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
deliveries: dict[str, int] = {}
applied: list[object] = []


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = self.headers.get("Idempotency-Key")
        if not key:
            self.send_error(400, "no Idempotency-Key")
            return
        with lock:
            deliveries[key] = deliveries.get(key, 0) + 1
            if deliveries[key] == 1:
                applied.append(json.loads(body)["payload"]["value"])
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        with lock:
            stats = {
                "deliveries": sum(deliveries.values()),
                "distinct": len(deliveries),
                "repeated": sum(n - 1 for n in deliveries.values()),
                "applied": list(applied),
            }
        data = json.dumps(stats).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
