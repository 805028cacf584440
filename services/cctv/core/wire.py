"""What a camera sender and ingest agree on: the frame upload's path, headers, body type and
the camera-name pattern.

The Pi sender (``pi/cctv_sender/wire.py``) keeps its own copy of these values, because it
installs without this package; ``tests/test_wire_contract.py`` fails when the two differ.
"""

from __future__ import annotations

import re

#: a camera name; match it with ``fullmatch`` (``$`` alone also matches before a final newline)
CAMERA_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
CAMERA_NAME_RE = re.compile(CAMERA_NAME_PATTERN)

#: where a sender POSTs one frame (``{camera}`` URL-quoted)
FRAMES_PATH = "/api/v1/cameras/{camera}/frames"
#: the body: one JPEG image
FRAME_CONTENT_TYPE = "image/jpeg"
#: the sender's sequence number: ASCII digits, unique per camera (ingest de-duplicates on it)
HEADER_SEQ = "X-Frame-Seq"
#: capture time, microseconds since the Unix epoch on the sender's clock
HEADER_CAPTURE_TS = "X-Capture-Ts"
#: "1": the frame was spooled during an outage and is sent late
HEADER_LATE = "X-Frame-Late"
#: "1": the sender's clock was not yet synchronised when the frame was captured
HEADER_CLOCK_UNSYNCED = "X-Clock-Unsynced"
#: the camera's token, as ``Bearer <token>``
HEADER_AUTH = "Authorization"
