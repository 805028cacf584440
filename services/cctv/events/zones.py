"""Geometry of zones and lines: anchor points of boxes, point in polygon, line crossings."""

from __future__ import annotations

import math
from collections.abc import Sequence

from cctv.events.config import Line, Point, Zone

#: an anchor this close to a line (pixels) is on neither side: jitter on the line is no crossing
LINE_MARGIN_PX = 2.0


def anchor_point(xyxy: Sequence[float], anchor: str) -> Point:
    """The point of a box that zones and lines test: bottom centre (ground contact) or centre."""
    x1, y1, x2, y2 = (float(v) for v in xyxy[:4])
    if anchor == "center":
        return ((x1 + x2) / 2, (y1 + y2) / 2)
    return ((x1 + x2) / 2, y2)


def in_polygon(p: Point, polygon: Sequence[Point]) -> bool:
    """True when ``p`` is inside ``polygon`` (even-odd rule; the edge counts as inside)."""
    x, y = p
    if (x < min(q[0] for q in polygon) or x > max(q[0] for q in polygon)
            or y < min(q[1] for q in polygon) or y > max(q[1] for q in polygon)):
        return False
    inside = False
    n = len(polygon)
    for i in range(n):
        (x1, y1), (x2, y2) = polygon[i], polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y):
            xc = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x == xc:
                return True  # on this edge
            if x < xc:
                inside = not inside
        elif y1 == y2 == y and min(x1, x2) <= x <= max(x1, x2):
            return True  # on a horizontal edge
    return inside


def zone_contains(zone: Zone, xyxy: Sequence[float]) -> bool:
    """True when the box's anchor point is in the zone."""
    return in_polygon(anchor_point(xyxy, zone.anchor), zone.points)


def line_side(line: Line, p: Point, margin: float = LINE_MARGIN_PX) -> int:
    """+1 or -1 for the side of the (infinite) line ``p`` is on; 0 within ``margin`` pixels."""
    (ax, ay), (bx, by) = line.a, line.b
    cross = (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax)
    dist = cross / math.dist(line.a, line.b)
    if abs(dist) <= margin:
        return 0
    return 1 if dist > 0 else -1


def crosses_segment(line: Line, p0: Point, p1: Point) -> bool:
    """True when the move ``p0`` -> ``p1`` passes through the segment itself (not its
    extension); the caller has established that the sides differ."""
    (ax, ay), (bx, by) = line.a, line.b
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    ex, ey = bx - ax, by - ay
    denom = dx * ey - dy * ex
    if abs(denom) < 1e-12:
        return False
    # p0 + t*d = a + u*e  ->  u along the segment, t along the move
    u = ((ax - p0[0]) * dy - (ay - p0[1]) * dx) / denom
    return -0.02 <= u <= 1.02


def crossing_direction(line: Line, p0: Point, p1: Point) -> str:
    """The compass name (in image terms) of a crossing move: the part of the move across the
    line, named by its larger axis: up, down, left or right."""
    ex, ey = line.b[0] - line.a[0], line.b[1] - line.a[1]
    norm = math.hypot(ex, ey)
    nx, ny = -ey / norm, ex / norm
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    k = dx * nx + dy * ny
    cx, cy = k * nx, k * ny
    if abs(cx) >= abs(cy):
        return "right" if cx > 0 else "left"
    return "down" if cy > 0 else "up"
