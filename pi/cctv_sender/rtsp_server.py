"""A small RTSP server for one H.264 stream: the Pi serves its camera for a puller in the
cluster to fetch, for links too thin for JPEG frames (720p30 JPEG is ~20 Mbit/s, H.264 a few).

Access units (one encoded frame, Annex-B byte stream, as picamera2's ``H264Encoder`` hands
them to its output) are packetised as RTP (RFC 6184: single NAL unit packets and FU-A
fragments, 90 kHz clock) and sent to every playing client interleaved over its RTSP TCP
connection (RFC 2326 section 10.12): TCP survives NAT and lossy Wi-Fi better than UDP, and
needs no extra ports. It answers OPTIONS, DESCRIBE (SDP with the stream's SPS and PPS),
SETUP (TCP interleaved only; UDP gets 461), PLAY, GET_PARAMETER (keep-alive) and TEARDOWN.

Each client has a bounded send queue and its own thread, so a slow client never holds up
the camera or the other clients; a client whose queue overflows is disconnected (counted).
New clients start at the next keyframe.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import queue
import socket
import threading
import time
from urllib.parse import urlsplit

log = logging.getLogger("cctv_sender.rtsp")

MTU_PAYLOAD = 1400
PAYLOAD_TYPE = 96
_NAL_SPS, _NAL_PPS, _NAL_IDR, _NAL_FU_A = 7, 8, 5, 28


def split_nals(au: bytes) -> list[bytes]:
    """The NAL units of an Annex-B byte stream (start codes removed)."""
    nals: list[bytes] = []
    i, n = 0, len(au)
    start = -1
    while i + 3 <= n:
        if au[i] == 0 and au[i + 1] == 0 and au[i + 2] == 1:
            if start >= 0:
                end = i - 1 if i > 0 and au[i - 1] == 0 else i
                if end > start:
                    nals.append(au[start:end])
            i += 3
            start = i
            continue
        i += 1
    if start >= 0 and start < n:
        nals.append(au[start:])
    return [nal for nal in nals if nal]


def packetize(nals: list[bytes], seq: int, ts90: int, ssrc: int) -> tuple[list[bytes], int]:
    """RTP packets for one access unit (marker on the last); returns them and the next
    sequence number."""
    payloads: list[bytes] = []
    for nal in nals:
        if len(nal) <= MTU_PAYLOAD:
            payloads.append(nal)
            continue
        indicator = (nal[0] & 0xE0) | _NAL_FU_A
        kind = nal[0] & 0x1F
        body = nal[1:]
        for off in range(0, len(body), MTU_PAYLOAD - 2):
            chunk = body[off:off + MTU_PAYLOAD - 2]
            header = kind | (0x80 if off == 0 else 0) | \
                (0x40 if off + MTU_PAYLOAD - 2 >= len(body) else 0)
            payloads.append(bytes((indicator, header)) + chunk)
    packets = []
    for i, payload in enumerate(payloads):
        marker = 0x80 if i == len(payloads) - 1 else 0
        header = bytes((0x80, marker | PAYLOAD_TYPE)) + (seq & 0xFFFF).to_bytes(2, "big") + \
            (ts90 & 0xFFFFFFFF).to_bytes(4, "big") + ssrc.to_bytes(4, "big")
        packets.append(header + payload)
        seq += 1
    return packets, seq


class _Client:
    """One playing client: a bounded queue of interleaved packets and a writer thread."""

    def __init__(self, conn: socket.socket, channel: int, server: RtspServer) -> None:
        self.conn, self.channel, self.server = conn, channel, server
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=2000)
        self.waiting_keyframe = True
        self.closed = False
        self.sent_bytes = 0
        threading.Thread(target=self._write, daemon=True, name="rtsp-client").start()

    def offer(self, packets: list[bytes]) -> bool:
        """Queue the packets of one access unit; False when the client cannot keep up."""
        try:
            for pkt in packets:
                self.queue.put_nowait(b"$" + bytes((self.channel,)) +
                                      len(pkt).to_bytes(2, "big") + pkt)
        except queue.Full:
            return False
        return True

    def _write(self) -> None:
        while True:
            data = self.queue.get()
            if data is None or self.closed:
                return
            try:
                with self.server.write_lock(self.conn):
                    self.conn.sendall(data)
                self.sent_bytes += len(data)
                self.server.sent_bytes += len(data)
            except OSError:
                self.server.drop(self, "send failed")
                return

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.conn.close()


class RtspServer:
    """``rtsp://<host>:<port>/<path>`` for the access units given to :meth:`push`."""

    def __init__(self, host: str = "0.0.0.0", port: int = 8554, path: str = "camera") -> None:
        self.path = path.strip("/")
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        self._params = threading.Event()
        self._clients: list[_Client] = []
        self._lock = threading.Lock()
        self._write_locks: dict[int, threading.Lock] = {}
        self._stop = threading.Event()
        self._seq = int.from_bytes(os.urandom(2), "big")
        self._ssrc = int.from_bytes(os.urandom(4), "big")
        self.sessions = 0
        self.slow_clients = 0
        self.sent_bytes = 0
        self.access_units = 0
        self.frames_sent = 0  # access units that went to at least one client
        self._thread = threading.Thread(target=self._accept, daemon=True, name="rtsp-accept")

    def start(self) -> RtspServer:
        self._thread.start()
        log.info("serving H.264 at rtsp://<this host>:%d/%s", self.port, self.path)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            clients, self._clients = self._clients, []
        for c in clients:
            c.close()
        with contextlib.suppress(OSError):
            self.sock.close()

    @property
    def clients(self) -> int:
        """Clients playing now."""
        return len(self._clients)

    def write_lock(self, conn: socket.socket) -> threading.Lock:
        """RTSP replies and media share a connection: one writer at a time."""
        with self._lock:
            return self._write_locks.setdefault(id(conn), threading.Lock())

    def drop(self, client: _Client, why: str) -> None:
        """Disconnect a client (it may reconnect and start again at a keyframe)."""
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)
            else:
                return
        log.warning("RTSP client dropped: %s", why)
        client.close()

    # -- media ----------------------------------------------------------------------------------
    def push(self, au: bytes, keyframe: bool, timestamp_us: int | None = None) -> None:
        """Send one access unit to every playing client."""
        nals = split_nals(au)
        for nal in nals:
            kind = nal[0] & 0x1F
            if kind == _NAL_SPS:
                self.sps = nal
            elif kind == _NAL_PPS:
                self.pps = nal
            elif kind == _NAL_IDR:
                keyframe = True
        if self.sps and self.pps:
            self._params.set()
        self.access_units += 1
        ts_us = timestamp_us if timestamp_us is not None else time.monotonic_ns() // 1000
        with self._lock:
            clients = list(self._clients)
        if not clients:
            return
        # one sequence for every client: a client joins at a keyframe, gaps before are moot
        packets, self._seq = packetize(nals, self._seq, ts_us * 9 // 100, self._ssrc)
        sent = False
        for c in clients:
            if c.waiting_keyframe:
                if not keyframe:
                    continue
                c.waiting_keyframe = False
            sent = True
            if not c.offer(packets):
                self.slow_clients += 1
                self.drop(c, "too slow for the stream (send queue full)")
        self.frames_sent += int(sent)

    # -- RTSP -----------------------------------------------------------------------------------
    def sdp(self) -> bytes:
        """The session description (after the first SPS and PPS were seen)."""
        assert self.sps is not None and self.pps is not None
        profile = self.sps[1:4].hex()
        sprop = (base64.b64encode(self.sps).decode() + "," +
                 base64.b64encode(self.pps).decode())
        lines = ["v=0", "o=- 0 0 IN IP4 0.0.0.0", "s=cctv-sender", "c=IN IP4 0.0.0.0",
                 "t=0 0", "m=video 0 RTP/AVP 96", "a=rtpmap:96 H264/90000",
                 f"a=fmtp:96 packetization-mode=1;profile-level-id={profile};"
                 f"sprop-parameter-sets={sprop}", "a=control:track0"]
        return ("\r\n".join(lines) + "\r\n").encode()

    def _path_ok(self, url: str) -> bool:
        path = urlsplit(url).path.strip("/")
        return path == self.path or path.startswith(self.path + "/")

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name="rtsp-session").start()

    def _reply(self, conn: socket.socket, cseq: str, status: str = "200 OK",
               extra: str = "", body: bytes = b"") -> None:
        head = f"RTSP/1.0 {status}\r\nCSeq: {cseq}\r\nServer: cctv-sender\r\n{extra}"
        if body:
            head += f"Content-Length: {len(body)}\r\n"
        with self.write_lock(conn):
            conn.sendall((head + "\r\n").encode() + body)

    def _serve(self, conn: socket.socket) -> None:
        session = os.urandom(4).hex()
        client: _Client | None = None
        buf = b""
        conn.settimeout(120)  # a silent client (no keep-alive) is gone
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    if buf.startswith(b"$") and len(buf) >= 4:  # RTCP from the client
                        size = int.from_bytes(buf[2:4], "big")
                        if len(buf) < 4 + size:
                            break
                        buf = buf[4 + size:]
                        continue
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf += data
                    if len(buf) > 65536:
                        return
                if b"\r\n\r\n" not in buf:
                    continue
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                method, url = parts[0], parts[1] if len(parts) > 1 else ""
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:])}
                length = headers.get("content-length", "0")
                buf = buf[int(length) if length.isdigit() else 0:]
                cseq = headers.get("cseq", "0")
                if method in ("DESCRIBE", "SETUP", "PLAY") and not self._path_ok(url):
                    self._reply(conn, cseq, "404 Not Found")
                    continue
                if method == "OPTIONS":
                    self._reply(conn, cseq, extra="Public: OPTIONS, DESCRIBE, SETUP, PLAY, "
                                "GET_PARAMETER, TEARDOWN\r\n")
                elif method == "DESCRIBE":
                    if not self._params.wait(10):
                        self._reply(conn, cseq, "503 Service Unavailable",
                                    "Retry-After: 2\r\n")
                        continue
                    base = url.rstrip("/") + "/"
                    self._reply(conn, cseq, extra=f"Content-Base: {base}\r\n"
                                "Content-Type: application/sdp\r\n", body=self.sdp())
                elif method == "SETUP":
                    transport = headers.get("transport", "")
                    if "TCP" not in transport.upper():
                        self._reply(conn, cseq, "461 Unsupported Transport")
                        continue
                    self._reply(conn, cseq, extra="Transport: RTP/AVP/TCP;unicast;"
                                f"interleaved=0-1\r\nSession: {session};timeout=60\r\n")
                elif method == "PLAY":
                    self._reply(conn, cseq, extra=f"Session: {session}\r\nRange: npt=0.000-\r\n")
                    if client is None:
                        client = _Client(conn, 0, self)
                        with self._lock:
                            self._clients.append(client)
                        self.sessions += 1
                        log.info("RTSP client playing (%d now)", self.clients)
                elif method == "GET_PARAMETER":
                    self._reply(conn, cseq, extra=f"Session: {session}\r\n")
                elif method == "TEARDOWN":
                    self._reply(conn, cseq, extra=f"Session: {session}\r\n")
                    return
                else:
                    self._reply(conn, cseq, "405 Method Not Allowed")
        except (OSError, ValueError):
            return
        finally:
            if client is not None:
                with self._lock:
                    playing = client in self._clients
                    if playing:
                        self._clients.remove(client)
                client.close()
                if playing:
                    log.info("RTSP client left (%d now)", self.clients)
            else:
                with contextlib.suppress(OSError):
                    conn.close()
            with self._lock:
                self._write_locks.pop(id(conn), None)
