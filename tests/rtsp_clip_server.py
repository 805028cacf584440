"""An RTSP server for tests and benchmarks (GStreamer's gst-rtsp-server from Debian's
packages): serves an H.264 MP4 clip at ``rtsp://127.0.0.1:<port>/live``, without re-encoding.

Run it with the system Python, which has ``gi`` (the virtualenv does not)::

    /usr/bin/python3 tests/rtsp_clip_server.py CLIP PORT [REPEAT]

The clip is first copied ``REPEAT`` times (default 20) end to end into one file (ffmpeg
``-stream_loop``, stream copy), so the stream runs long without a seek; each client gets its
own pipeline from the start of it. Prints ``ready`` once it listens; stops on SIGTERM.
"""

import os
import signal
import subprocess
import sys
import tempfile

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def long_clip(clip: str, repeat: int, folder: str) -> str:
    """``clip`` copied ``repeat`` times into one MP4 in ``folder`` (no re-encoding)."""
    out = os.path.join(folder, "long.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(repeat - 1), "-i", clip,
                    "-c", "copy", "-an", out], check=True)
    return out


def main() -> int:
    clip, port = sys.argv[1], sys.argv[2]
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    with tempfile.TemporaryDirectory(prefix="cctv-rtsp-") as folder:
        path = long_clip(clip, repeat, folder)
        Gst.init(None)
        server = GstRtspServer.RTSPServer()
        server.set_address("127.0.0.1")
        server.set_service(port)
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(f'( filesrc location="{path}" ! qtdemux ! h264parse '
                           "config-interval=-1 ! rtph264pay name=pay0 pt=96 )")
        factory.set_shared(False)
        server.get_mount_points().add_factory("/live", factory)
        if server.attach(None) == 0:
            print(f"cannot listen on port {port}", flush=True)
            return 1
        loop = GLib.MainLoop()
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
        print("ready", flush=True)
        loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
