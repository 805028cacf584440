"""The ingest HTTP client: one keep-alive connection, one POST per frame."""

from __future__ import annotations

import contextlib
import enum
import http.client
import json
import socket
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from cctv_sender import __version__, wire
from cctv_sender.frame import Frame
from cctv_sender.neterrors import describe_error
from cctv_sender.tlsverify import TLSOptions, VerifiedHTTPSConnection, is_tls_refusal


class Outcome(enum.Enum):
    """What to do with a frame after a POST."""

    DELIVERED = "delivered"    # 202: new frame stored
    DUPLICATE = "duplicate"    # 200 duplicate: ingest had it already (counts as delivered)
    RETRY = "retry"            # connection error, 5xx, 429: keep the frame, try later
    REJECTED = "rejected"      # other 4xx: this frame will never be accepted


@dataclass(frozen=True)
class Reply:
    """The result of one POST."""

    outcome: Outcome
    status: int = 0               # HTTP status, 0 when there was no reply
    message: str = ""
    retry_after: float | None = None
    tls_refused: bool = False     # ingest's TLS certificate was refused (nothing was sent)

    @property
    def auth_problem(self) -> bool:
        """Rejected for the camera or token rather than for the frame itself."""
        return self.status in (401, 403, 404)


class IngestURLError(ValueError):
    """The ingest URL cannot be used."""


class IngestClient:
    """POSTs frames to ``{base}/api/v1/cameras/{camera}/frames`` over a persistent connection.

    A request that fails on a reused connection before any reply is retried once on a
    fresh one (the server may have closed the idle connection); that is safe because ingest
    de-duplicates on (camera, seq).
    """

    def __init__(self, base_url: str, camera: str, token: str, timeout_s: float = 10.0,
                 tls: TLSOptions | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise IngestURLError(f"ingest URL {base_url!r} must look like http://host:8080")
        self.scheme, self.host = parts.scheme, parts.hostname
        try:
            self.port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise IngestURLError(f"ingest URL {base_url!r} has a bad port") from None
        self.path = parts.path.rstrip("/") + wire.FRAMES_PATH.format(camera=quote(camera, safe=""))
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        # how ingest's certificate is checked (https:// only; cctv_sender/tlsverify.py)
        self.tls = tls or TLSOptions()
        self.headers = {wire.HEADER_AUTH: f"Bearer {token}",
                        "Content-Type": wire.FRAME_CONTENT_TYPE,
                        "User-Agent": f"cctv-sender/{__version__}"}
        self._conn: http.client.HTTPConnection | None = None
        self._requests_on_conn = 0
        self.connects = 0

    def set_token(self, token: str) -> None:
        """Send with ``token`` from the next frame on (a rotated camera token)."""
        self.headers[wire.HEADER_AUTH] = f"Bearer {token}"

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.scheme == "https":
                self._conn = VerifiedHTTPSConnection(self.host, self.port, self.timeout_s,
                                                     self.tls)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port,
                                                        timeout=self.timeout_s)
            self._conn.connect()
            with contextlib.suppress(OSError):
                self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._requests_on_conn = 0
            self.connects += 1
        return self._conn

    def close(self) -> None:
        """Close the connection (a later POST opens a new one)."""
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None

    def _request(self, method: str, path: str, body: bytes | None,
                 headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        for attempt in (0, 1):
            reused = self._conn is not None and self._requests_on_conn > 0
            try:
                conn = self._connect()
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self._requests_on_conn += 1
                if resp.will_close:
                    self.close()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt or not reused:
                    raise
            except (OSError, http.client.HTTPException):
                self.close()
                raise
        raise AssertionError("unreachable")

    def post(self, frame: Frame) -> Reply:
        """Send one frame; never raises for network or HTTP problems."""
        headers = dict(self.headers)
        headers[wire.HEADER_SEQ] = str(frame.seq)
        headers[wire.HEADER_CAPTURE_TS] = str(frame.ts_us)
        if frame.late:
            headers[wire.HEADER_LATE] = "1"
        if not frame.clock_synced:
            headers[wire.HEADER_CLOCK_UNSYNCED] = "1"
        try:
            status, resp_headers, data = self._request("POST", self.path, frame.jpeg, headers)
        except (OSError, http.client.HTTPException) as exc:
            if is_tls_refusal(exc):
                # not sent: the frame waits (spooled) until the configuration is fixed
                return Reply(Outcome.RETRY, 0, str(exc), tls_refused=True)
            return Reply(Outcome.RETRY, 0, f"ingest unreachable: {describe_error(exc)}")
        message = _message(data)
        if status == 202:
            return Reply(Outcome.DELIVERED, status)
        if status == 200:
            return Reply(Outcome.DUPLICATE, status)
        retry_after = _retry_after(resp_headers.get("retry-after"))
        if status == 429 or status >= 500:
            return Reply(Outcome.RETRY, status, f"ingest replied {status}: {message}",
                         retry_after)
        return Reply(Outcome.REJECTED, status, f"ingest replied {status}: {message}")

    def get(self, path: str) -> tuple[int, bytes]:
        """A GET on the ingest host (for ``--check``); raises OSError when unreachable."""
        status, _h, data = self._request("GET", path, None, {"User-Agent": self.headers[
            "User-Agent"]})
        return status, data



def _message(data: bytes) -> str:
    try:
        body = json.loads(data)
        if isinstance(body, dict):
            return str(body.get("message") or body.get("error") or "")[:200]
    except ValueError:
        pass
    return data[:200].decode(errors="replace").strip()


def _retry_after(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return max(0.0, min(float(raw), 300.0))
    except ValueError:
        return None
