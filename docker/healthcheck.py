#!/usr/bin/python3
"""Container HEALTHCHECK: exit 0 when healthy, 1 otherwise.

    cctv-healthcheck [URL] [FIELD]      (default URL http://127.0.0.1:8080/healthz)

Healthy: the URL answers 2xx within 3 s, or, when FIELD is given, its JSON reply (any status)
has FIELD true. Inference uses `/readyz model_loaded`: a replica is healthy once its model is
loaded, even while Redis is unreachable, so an outage of Redis (or of the manager it runs on)
does not make Swarm replace warm replicas with cold ones. Standard library only (no curl).
"""

import json
import sys
import urllib.error
import urllib.request

url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/healthz"
field = sys.argv[2] if len(sys.argv) > 2 else None
try:
    with urllib.request.urlopen(url, timeout=3.0) as resp:  # noqa: S310 - local probe
        status, body = resp.status, resp.read(65536)
except urllib.error.HTTPError as exc:  # a non-2xx reply still has a body
    status, body = exc.code, exc.read(65536)
except (urllib.error.URLError, OSError, ValueError) as exc:
    print(f"unhealthy: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
if field is None:
    ok = 200 <= status < 300
else:
    try:
        ok = json.loads(body).get(field) is True
    except (ValueError, AttributeError):
        ok = False
if not ok:
    print(f"unhealthy: {url}: {status} {body[:200]!r}", file=sys.stderr)
sys.exit(0 if ok else 1)
