#!/usr/bin/python3
"""Container HEALTHCHECK: exit 0 when the URL answers 2xx within the timeout, else 1.

    cctv-healthcheck [URL] [TIMEOUT_S]      (default http://127.0.0.1:8080/healthz, 3 s)

Standard library only, so it works in every image without curl.
"""

import sys
import urllib.error
import urllib.request

url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/healthz"
timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
try:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local probe
        sys.exit(0 if 200 <= resp.status < 300 else 1)
except (urllib.error.URLError, OSError, ValueError) as exc:
    print(f"unhealthy: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
