"""Which detected classes a replica keeps (``CCTV_CLASSES``).

A COCO model knows 80 classes; a CCTV user cares about people, vehicles and animals, and boxes
on benches, traffic lights and potted plants are noise that line and dwell rules would have to
filter one by one. So by default (``cctv``) only those classes are kept; ``all`` keeps every
class, and a comma-separated list of class names or ids keeps exactly those (``person,car``,
``0,2``). Names are checked against the model's own class names when it is loaded, so a typo
stops the replica at start with the list of names the model knows. A model with none of the
default classes (a custom model) keeps all its classes under ``cctv``, and says so.

Detections of other classes are left out right after the model call, before tracking.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the settings import this module: it stays free of the model code
    from cctv.inference.detector import Detection

#: the classes kept by default (COCO names): people, vehicles, animals
CCTV_CLASSES = ("person", "bicycle", "car", "motorcycle", "bus", "train", "truck", "boat",
                "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
                "giraffe")
_ITEM = re.compile(r"[a-z0-9][a-z0-9 _-]{0,39}")


class ClassesError(ValueError):
    """``CCTV_CLASSES`` cannot be used (with this model); the message says why."""


def parse_classes(raw: str) -> tuple[str, ...] | None:
    """The items of ``raw`` (``cctv``, ``all`` or names/ids); None for ``all``. Raises
    :class:`ClassesError` for a malformed value."""
    value = raw.strip().lower()
    if value in ("", "cctv"):
        return CCTV_CLASSES
    if value == "all":
        return None
    items = tuple(i.strip() for i in value.split(","))
    for item in items:
        if not _ITEM.fullmatch(item):
            raise ClassesError(f"{item!r} is not a class name or id (use cctv, all, or names "
                               "or ids separated by commas, e.g. person,car or 0,2)")
    return items


@dataclass(frozen=True)
class ClassFilter:
    """The class ids a replica keeps; ``ids`` None keeps every class."""

    ids: frozenset[int] | None
    why: str

    def keep(self, detections: list[Detection]) -> list[Detection]:
        """``detections`` of the kept classes."""
        if self.ids is None:
            return detections
        return [d for d in detections if d.cls in self.ids]


def class_filter(raw: str, names: Mapping[int, str] | None) -> ClassFilter:
    """The filter for ``CCTV_CLASSES=raw`` with a model whose class names are ``names`` (None
    when the backend does not say). Raises :class:`ClassesError` for a name the model does not
    know or an id it does not have."""
    items = parse_classes(raw)
    if items is None:
        return ClassFilter(None, "all classes (CCTV_CLASSES=all)")
    preset = items is CCTV_CLASSES
    if names is None:
        if preset:
            return ClassFilter(None, "all classes (the backend does not name its classes)")
        if not all(i.isdigit() for i in items):
            raise ClassesError("the model's backend does not name its classes: give class ids")
        return ClassFilter(frozenset(int(i) for i in items), f"class ids {','.join(items)}")
    by_name = {str(n).lower(): i for i, n in names.items()}
    if preset:
        ids = frozenset(by_name[n] for n in CCTV_CLASSES if n in by_name)
        if not ids:
            return ClassFilter(None, "all classes (the model has none of the default "
                                     "people/vehicle/animal classes)")
        kept = sorted(names[i] for i in ids)
        return ClassFilter(ids, f"{len(ids)} of {len(names)} classes (CCTV_CLASSES=cctv: "
                                f"{', '.join(kept)})")
    ids = set()
    for item in items:
        if item.isdigit():
            if int(item) not in names:
                raise ClassesError(f"class id {item}: the model has ids 0..{max(names)}")
            ids.add(int(item))
        elif item in by_name:
            ids.add(by_name[item])
        else:
            known = ", ".join(sorted(by_name))
            raise ClassesError(f"the model has no class {item!r}; it knows: {known}")
    return ClassFilter(frozenset(ids), ", ".join(names[i] for i in sorted(ids)))
