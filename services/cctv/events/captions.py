"""One short English sentence per event, built from its detections, zone or line and time:
"2 cars entered zone 'junction' at 14:03:07, stayed 12 s". Captions are stored with the event,
indexed word by word for search, and are all a captions-only receiver gets."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

_IRREGULAR = {"person": "persons", "mouse": "mice", "sheep": "sheep", "skis": "skis",
              "scissors": "scissors", "knife": "knives", "bus": "buses"}


def plural(n: int, name: str) -> str:
    """``"1 car"``, ``"2 cars"``, ``"3 traffic lights"``."""
    if n == 1:
        return f"1 {name}"
    *head, last = name.split(" ")
    if last in _IRREGULAR:
        last = _IRREGULAR[last]
    elif re.search(r"(s|x|ch|sh)$", last):
        last += "es"
    elif re.search(r"[^aeiou]y$", last):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{n} " + " ".join([*head, last])


def clock(ms: float, tz: ZoneInfo) -> str:
    """``HH:MM:SS`` of a time in milliseconds since the epoch, in ``tz``."""
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%H:%M:%S")


def duration(seconds: float) -> str:
    """``"12 s"``, ``"3 min 5 s"``, ``"2 h 4 min"``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _objects(names: list[str], n: int | None = None) -> str:
    counts = Counter(names)
    if n is not None and n > sum(counts.values()) and len(counts) == 1:
        counts = Counter({next(iter(counts)): n})
    parts = [plural(c, name) for name, c in sorted(counts.items(), key=lambda kv: -kv[1])]
    if not parts:
        return plural(n or 1, "object")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(event: dict, tz: ZoneInfo) -> str:
    """The sentence for an event record (see storage.py for its fields)."""
    names = [s["name"] for s in event.get("subjects", [])]
    start = clock(event["start_ms"], tz)
    closed = event.get("status") == "closed"
    until = event.get("end_ms") or event.get("last_ms") or event["start_ms"]
    dur = duration((until - event["start_ms"]) / 1000)
    kind = event["type"]
    if kind == "line":
        heading = f" heading {event['direction']}" if event.get("direction") else ""
        return f"{_objects(names)} crossed line '{event['line']}'{heading} at {start}"
    if kind == "dwell":
        what = _objects(names)
        if closed:
            left = " and was lost" if event.get("reason") == "lost" else ""
            return f"{what} entered zone '{event['zone']}' at {start}, stayed {dur}{left}"
        return f"{what} entered zone '{event['zone']}' at {start}, still there after {dur}"
    n = int(event.get("count") or len(names))
    what = _objects(names, n)
    if closed:
        return f"up to {what} in zone '{event['zone']}' from {start} for {dur}"
    return f"{what} in zone '{event['zone']}' at {start}"


_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> set[str]:
    """Search terms of a text: lower-case words, plurals folded ("cars" finds "car")."""
    out = set()
    for w in _WORD.findall(text.lower()):
        out.add(w)
        if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            out.add(w[:-1])
    return out
