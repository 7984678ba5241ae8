"""The connector image's HEALTHCHECK: exit 0 when /healthz answers 200 (the connector is ready).

KEC_HEALTH_URL overrides the address (default http://127.0.0.1:9464/healthz).
"""

import os
import sys
import urllib.request

url = os.environ.get("KEC_HEALTH_URL", "http://127.0.0.1:9464/healthz")
try:
    with urllib.request.urlopen(url, timeout=2) as reply:
        sys.exit(0 if reply.status == 200 else 1)
except OSError as exc:  # refused, timed out, or an HTTP error status
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
