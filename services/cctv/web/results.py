"""Detection results as the API returns them: typed fields, parsed boxes, latencies.

Entries are decoded by :func:`cctv.core.entries.decode_result`; one that does not decode is
left out of the answer, counted (``cctv_web_bad_results_total``) and logged once per camera per
minute.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import redis
from prometheus_client import Counter

from cctv.core import keys
from cctv.core.entries import EntryError, ResultEntry, decode_result
from cctv.core.logthrottle import LogThrottle

log = logging.getLogger("cctv.web.results")

BAD_RESULTS = Counter("cctv_web_bad_results_total",
                      "Result entries that do not decode (left out of answers)", ["camera"])
_warn = LogThrottle(log)


def result_dict(result: ResultEntry) -> dict:
    """One decoded result as JSON, with the latencies capture → result (sender clock vs
    inference clock) and ingest → result in ms."""
    out = result.to_json()
    out["latency_ms"] = latencies_ms(out)
    return out


def result_json(entry_id: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> dict:
    """One ``cctv:det:{cam}`` entry as JSON (see :func:`result_dict`); raises
    :class:`~cctv.core.entries.EntryError` when it does not decode."""
    return result_dict(decode_result(entry_id, fields))


def latencies_ms(result: Mapping[str, object]) -> dict[str, float | None]:
    """Capture → result and ingest receive → result, in milliseconds (None when unknown)."""
    done, ts, rx = result.get("done"), result.get("ts"), result.get("rx")

    def span(start: object) -> float | None:
        if isinstance(done, int) and isinstance(start, int) and start > 0:
            return round((done - start) / 1000, 1)
        return None

    return {"capture_to_result": span(ts), "ingest_to_result": span(rx)}


def good_results(camera: str, entries: Iterable[tuple[bytes | str, Mapping]]) -> list[dict]:
    """The entries that decode, as JSON; the others are counted and logged."""
    out = []
    for eid, fields in entries:
        try:
            out.append(result_json(eid, fields))
        except EntryError as exc:
            BAD_RESULTS.labels(camera).inc()
            _warn.warning(camera, "camera %s: result %r does not decode, left out: %s", camera,
                          eid, exc)
    return out


def recent_results(client: redis.Redis, camera: str, count: int) -> list[dict]:
    """The newest ``count`` results of ``camera`` that decode, newest first."""
    return good_results(camera, client.xrevrange(keys.detections(camera), count=count))
