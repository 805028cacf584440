"""HTTP MJPEG source: ``multipart/x-mixed-replace`` streams (mjpg-streamer, IP cameras, our
own web viewer's ``/video/<camera>.mjpg``) and plain JPEG snapshot URLs.

Pure standard library: the JPEG parts are passed through as they are, never decoded, so this
is the cheapest source there is.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import re
import ssl
import time
from urllib.parse import unquote, urlsplit

from cctv_sender import __version__
from cctv_sender.neterrors import describe_error
from cctv_sender.sources import (
    BuildOptions,
    SourceConfigError,
    SourceKind,
    SourceSpec,
    redact,
)
from cctv_sender.sources.base import Source, SourceError

MAX_PART = 16 * 1024 * 1024
_BOUNDARY_RE = re.compile(r'boundary\s*=\s*"?([^";,]+)"?', re.I)


class MjpegSource(Source):
    """Reads JPEG frames from an HTTP URL.

    For a multipart stream each part is one frame; a part with ``Content-Length`` is read
    exactly, one without is read up to the next boundary. A URL that answers with a single
    ``image/jpeg`` is polled as a snapshot (the fps limit sets how often).
    """

    def __init__(self, url: str, *, name: str, timeout_s: float = 10.0,
                 poll_interval_s: float = 0.1) -> None:
        self.url, self.name, self.timeout_s = url, name, timeout_s
        self.poll_interval_s = poll_interval_s
        parts = urlsplit(url)
        self.scheme = parts.scheme.lower()
        self.host = parts.hostname or ""
        self.port = parts.port
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.headers = {"User-Agent": f"cctv-sender/{__version__}", "Accept": "*/*"}
        if parts.username is not None:
            cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
        self._conn: http.client.HTTPConnection | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._buf = bytearray()
        self._core = b""
        self._delim_re = re.compile(rb"$^")
        self._snapshot = False
        self._current = b""
        self._ctype = ""
        self._last_poll = 0.0
        self._fresh = False

    # -- connection -----------------------------------------------------------------------------
    def _request(self) -> http.client.HTTPResponse:
        if self.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout_s,
                context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        self._conn = conn
        try:
            conn.request("GET", self.path, headers=self.headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise SourceError(f"{self.name}: {describe_error(exc)}") from None
        if resp.status != 200:
            self.close()
            hint = " (check the user and password in the URL)" if resp.status in (401, 403) \
                else ""
            raise SourceError(f"{self.name}: HTTP {resp.status} {resp.reason}{hint}")
        return resp

    def open(self) -> None:
        self.close()
        resp = self._request()
        ctype = resp.getheader("Content-Type", "") or ""
        self._ctype = ctype.split(";")[0].strip().lower()
        if self._ctype.startswith("multipart/"):
            m = _BOUNDARY_RE.search(ctype)
            if not m:
                self.close()
                raise SourceError(f"{self.name}: multipart stream without a boundary")
            # Servers disagree on whether the parameter includes the leading "--" and on
            # whether the delimiter lines then carry two dashes more: accept any run of them.
            core = m.group(1).strip().lstrip("-").encode("latin-1")
            if not core:
                self.close()
                raise SourceError(f"{self.name}: empty multipart boundary")
            self._core = core
            self._delim_re = re.compile(rb"\r?\n--+" + re.escape(core) + rb"(?:--)?[ \t]*\r?\n")
            self._resp = resp
            self._snapshot = False
        elif self._ctype in ("image/jpeg", "image/jpg"):
            self._snapshot = True
            self._current = self._read_snapshot(resp)
            self._last_poll = time.monotonic()
            self._fresh = True
            self.close()
        else:
            self.close()
            raise SourceError(f"{self.name}: not an MJPEG stream or JPEG (Content-Type "
                              f"{ctype or 'missing'!r})")

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
        self._conn = None
        self._resp = None
        self._buf.clear()

    def describe(self) -> str:
        kind = "JPEG snapshots" if self._snapshot else "MJPEG stream"
        return f"{self.name} ({kind})"

    # -- reading ------------------------------------------------------------------------------
    def _fill(self) -> None:
        assert self._resp is not None
        try:
            chunk = self._resp.read1(65536)
        except (OSError, http.client.HTTPException) as exc:
            raise SourceError(f"{self.name}: {describe_error(exc)}") from None
        if not chunk:
            raise SourceError(f"{self.name}: stream ended")
        self._buf += chunk

    def _read_line(self) -> bytes:
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line = bytes(self._buf[:i + 1])
                del self._buf[:i + 1]
                return line.rstrip(b"\r\n")
            if len(self._buf) > 64 * 1024:
                raise SourceError(f"{self.name}: garbage in stream (no line end)")
            self._fill()

    def _read_part(self) -> bytes:
        # skip to the boundary line (the CRLF after the previous part, preambles, etc.)
        skipped = 0
        while True:
            line = self._read_line().rstrip()
            if line.startswith(b"--") and line.lstrip(b"-").startswith(self._core):
                if line.lstrip(b"-")[len(self._core):] == b"--":
                    raise SourceError(f"{self.name}: stream ended (closing boundary)")
                break
            skipped += len(line)
            if skipped > 4 * 1024 * 1024:
                raise SourceError(f"{self.name}: no multipart boundary found")
        length = -1
        while True:
            line = self._read_line()
            if not line:
                break
            key, _, value = line.decode("latin-1").partition(":")
            if key.strip().lower() == "content-length" and value.strip().isascii() \
                    and value.strip().isdigit():
                length = int(value.strip())
        if length > MAX_PART:
            raise SourceError(f"{self.name}: part of {length} bytes is too large")
        if length >= 0:
            while len(self._buf) < length:
                self._fill()
            data = bytes(self._buf[:length])
            del self._buf[:length]
        else:
            start = 0
            while True:
                m = self._delim_re.search(self._buf, start)
                if m:
                    data = bytes(self._buf[:m.start()])
                    del self._buf[:m.start()]  # the boundary line starts the next part
                    break
                if len(self._buf) > MAX_PART:
                    raise SourceError(f"{self.name}: part without end")
                start = max(0, len(self._buf) - len(self._core) - 80)
                self._fill()
        return data

    def _read_snapshot(self, resp: http.client.HTTPResponse) -> bytes:
        try:
            data = resp.read(MAX_PART + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise SourceError(f"{self.name}: {describe_error(exc)}") from None
        if len(data) > MAX_PART:
            raise SourceError(f"{self.name}: snapshot too large")
        return data

    def grab(self) -> None:
        if self._snapshot:
            if self._fresh:
                self._fresh = False
                return
            delay = self._last_poll + self.poll_interval_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._last_poll = time.monotonic()
            resp = self._request()
            try:
                self._current = self._read_snapshot(resp)
            finally:
                self.close()
        else:
            if self._resp is None:
                raise SourceError(f"{self.name}: not open")
            self._current = self._read_part()
        if not self._current.startswith(b"\xff\xd8"):
            raise SourceError(f"{self.name}: received data that is not a JPEG")

    def retrieve(self) -> bytes:
        return self._current



# --- the kind this module runs: http ---


def _parse_http(raw: str) -> SourceSpec:
    if not urlsplit(raw).hostname:
        raise SourceConfigError(f"source {redact(raw)!r}: HTTP URL has no host")
    return SourceSpec("http", raw, {}, redact(raw))


def _build_http(spec: SourceSpec, o: BuildOptions) -> Source:
    return MjpegSource(str(spec.target), name=spec.display, timeout_s=o.timeout_s)


HTTP = SourceKind("http", ("http://", "https://"), _parse_http, _build_http, hint="http://",
                  order=40)
