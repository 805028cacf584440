"""Detection results as the API returns them: typed fields, parsed boxes, latencies."""

from __future__ import annotations

import json
from collections.abc import Mapping

import redis

from cctv.core import keys

_INT_FIELDS = ("seq", "ts", "rx", "pick", "done", "w", "h", "epoch")
_FLOAT_FIELDS = ("infer_ms",)


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def result_json(entry_id: bytes | str, fields: Mapping[bytes | str, bytes | str | object]
                ) -> dict:
    """One ``cctv:det:{cam}`` entry as JSON: numbers as numbers, ``dets`` parsed, and the
    latencies capture → result (sender clock vs inference clock) and ingest → result in ms."""
    out: dict = {"id": _text(entry_id)}
    for k, v in fields.items():
        name = _text(k)
        if name == "jpeg":
            continue
        out[name] = v if isinstance(v, list) else _text(v)
    for names, convert in ((_INT_FIELDS, int), (_FLOAT_FIELDS, float)):
        for name in names:
            if name in out:
                try:
                    out[name] = convert(out[name])
                except (TypeError, ValueError):
                    out[name] = None
    if "late" in out:
        out["late"] = out["late"] == "1"
    dets = out.get("dets", "[]")
    if isinstance(dets, str):
        try:
            dets = json.loads(dets)
        except ValueError:
            dets = []
    out["dets"] = dets if isinstance(dets, list) else []
    out["latency_ms"] = latencies_ms(out)
    return out


def latencies_ms(result: Mapping[str, object]) -> dict[str, float | None]:
    """Capture → result and ingest receive → result, in milliseconds (None when unknown)."""
    done, ts, rx = result.get("done"), result.get("ts"), result.get("rx")

    def span(start: object) -> float | None:
        if isinstance(done, int) and isinstance(start, int) and start > 0:
            return round((done - start) / 1000, 1)
        return None

    return {"capture_to_result": span(ts), "ingest_to_result": span(rx)}


def recent_results(client: redis.Redis, camera: str, count: int) -> list[dict]:
    """The newest ``count`` results of ``camera``, newest first."""
    return [result_json(eid, fields)
            for eid, fields in client.xrevrange(keys.detections(camera), count=count)]
