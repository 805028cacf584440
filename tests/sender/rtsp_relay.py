"""A minimal RTSP server for tests: ffmpeg encodes a clip to RTP (H.264, a keyframe every
half second) on a loopback UDP port, and this relays the packets to RTSP clients,
interleaved over TCP.

ffmpeg's own ``-rtsp_flags listen`` only *receives* streams (ANNOUNCE/RECORD), it cannot
serve a PLAY client, hence this relay. It answers OPTIONS, DESCRIBE, SETUP (TCP interleaved
only), PLAY and TEARDOWN: enough for FFmpeg's RTSP client, which OpenCV uses.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path


class RtspRelay:
    """``rtsp://127.0.0.1:<port>/live`` streaming ``clip`` in a loop at its own rate."""

    def __init__(self, clip: Path, workdir: Path) -> None:
        self.clip, self.workdir = clip, workdir
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0.2)
        self.tcp = socket.socket()
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(8)
        self.tcp.settimeout(0.2)
        self.port = self.tcp.getsockname()[1]
        self.sdp_path = workdir / "rtsp.sdp"
        self.clients: list[socket.socket] = []
        self.sessions = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.ffmpeg: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/live"

    def start(self) -> RtspRelay:
        exe = shutil.which("ffmpeg") or "ffmpeg"
        udp_port = self.udp.getsockname()[1]
        self.ffmpeg = subprocess.Popen(
            [exe, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
             "-i", str(self.clip), "-an", "-c:v", "libx264", "-preset", "ultrafast",
             "-tune", "zerolatency", "-g", "15", "-x264-params", "repeat-headers=1",
             "-flags", "+global_header", "-pix_fmt", "yuv420p",
             "-f", "rtp", "-sdp_file", str(self.sdp_path),
             f"rtp://127.0.0.1:{udp_port}?pkt_size=1400"],
            stdout=subprocess.DEVNULL, stderr=open(self.workdir / "ffmpeg.log", "wb"))  # noqa: SIM115
        end = time.monotonic() + 10
        while not (self.sdp_path.exists() and "m=video" in self.sdp_path.read_text()):
            if time.monotonic() > end or self.ffmpeg.poll() is not None:
                raise RuntimeError("ffmpeg did not start streaming RTP")
            time.sleep(0.05)
        for target in (self._pump, self._accept):
            threading.Thread(target=target, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.ffmpeg and self.ffmpeg.poll() is None:
            self.ffmpeg.terminate()
            self.ffmpeg.wait(5)
        with self._lock:
            for c in self.clients:
                with contextlib.suppress(OSError):
                    c.close()
            self.clients.clear()
        self.tcp.close()
        self.udp.close()

    def drop_clients(self) -> None:
        """Cut every playing client (a camera reboot, as seen by the sender)."""
        with self._lock:
            for c in self.clients:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
            self.clients.clear()

    def _sdp(self) -> bytes:
        lines = []
        for line in self.sdp_path.read_text().splitlines():
            if line.startswith("c="):
                line = "c=IN IP4 0.0.0.0"
            elif line.startswith("m=video"):
                parts = line.split(" ")
                line = " ".join([parts[0], "0", *parts[2:]])
            lines.append(line)
        lines.append("a=control:track0")
        return ("\r\n".join(lines) + "\r\n").encode()

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self.udp.recv(65536)
            except (TimeoutError, OSError):
                continue
            frame = b"$\x00" + len(packet).to_bytes(2, "big") + packet
            with self._lock:
                for c in list(self.clients):
                    try:
                        c.sendall(frame)
                    except OSError:
                        self.clients.remove(c)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self.tcp.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(None)
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method = lines[0].split(" ")[0]
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:])}
                length = int(headers.get("content-length", "0"))
                buf = buf[length:]
                cseq = headers.get("cseq", "0")
                extra, body = "", b""
                status = "200 OK"
                if method == "OPTIONS":
                    extra = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n"
                elif method == "DESCRIBE":
                    body = self._sdp()
                    extra = (f"Content-Base: {self.url}/\r\nContent-Type: application/sdp\r\n"
                             f"Content-Length: {len(body)}\r\n")
                elif method == "SETUP":
                    transport = headers.get("transport", "")
                    if "TCP" not in transport.upper():
                        status = "461 Unsupported Transport"
                    else:
                        extra = ("Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
                                 "Session: 12345678;timeout=60\r\n")
                elif method == "PLAY":
                    extra = "Session: 12345678\r\nRange: npt=0.000-\r\n"
                elif method == "TEARDOWN":
                    conn.sendall(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n\r\n".encode())
                    return
                elif method == "GET_PARAMETER":
                    extra = "Session: 12345678\r\n"
                else:
                    status = "405 Method Not Allowed"
                reply = f"RTSP/1.0 {status}\r\nCSeq: {cseq}\r\n{extra}\r\n".encode() + body
                with self._lock:
                    conn.sendall(reply)
                    if method == "PLAY":
                        self.sessions += 1
                        self.clients.append(conn)
        except OSError:
            return
