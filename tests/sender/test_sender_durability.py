"""Power cuts and full disks: the sequence file is durable before its numbers are used, a
spool or sequence write that fails costs a counted frame, never the process; frames
captured before the clock was synchronised are marked."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cctv_sender.client import IngestClient
from cctv_sender.clock import ClockSync
from cctv_sender.frame import Frame
from cctv_sender.sender import Sender
from cctv_sender.sources import Source, SourceEnded
from cctv_sender.spool import Spool
from cctv_sender.state import SequenceCounter, write_atomic

from sender_support import make_jpeg
from support import ROOT


# -- sequence file ------------------------------------------------------------------------------
def test_sequence_block_is_durable_before_its_numbers_are_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync of the new file's data before the rename, fsync of the directory after it,
    both before next() returns a number of the new block."""
    path = tmp_path / "seq"
    events: list[tuple[str, str]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            events.append(("dir", path.read_text().strip()))
        else:
            events.append(("file", ""))
        real_fsync(fd)

    counter = SequenceCounter(path, block=4).load()
    first = counter.peek
    monkeypatch.setattr(os, "fsync", spy)
    got = [counter.next() for _ in range(5)]  # the first and the fifth reserve a block
    assert got == list(range(first, first + 5))
    assert events == [("file", ""), ("dir", str(first + 4)), ("file", ""),
                      ("dir", str(first + 8))]


def test_failed_atomic_write_raises_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "seq"
    target.mkdir()
    (target / "x").write_text("")  # a non-empty directory: the rename must fail
    with pytest.raises(OSError):
        write_atomic(target, b"123\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]


# -- full disk ----------------------------------------------------------------------------------
class FramesSource(Source):
    """``n`` distinct JPEGs, then the end (like a file)."""

    name = "frames"

    def __init__(self, n: int) -> None:
        self.frames = [make_jpeg(i) for i in range(n)]
        self.i = -1

    def open(self) -> None:
        pass

    def grab(self) -> None:
        self.i += 1
        if self.i >= len(self.frames):
            raise SourceEnded()

    def retrieve(self) -> bytes:
        return self.frames[self.i]

    def close(self) -> None:
        pass


_FULL_DISK = r"""
import json, resource, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from cctv_sender.client import IngestClient
from cctv_sender.frame import Frame
from cctv_sender.sender import Sender
from cctv_sender.spool import Spool
from cctv_sender.state import SequenceCounter
from test_sender_durability import FramesSource

state = Path(sys.argv[1])
spool = Spool(state / "spool", 50_000_000).open()
sender = Sender(source=FramesSource(0), client=IngestClient("http://127.0.0.1:9", "c", "t"),
                spool=spool, seq=SequenceCounter(state / "seq").load())
small = Frame(jpeg=b"\xff\xd8" + bytes(500) + b"\xff\xd9", ts_us=1, seq=1)
sender._to_spool(small)                      # fits
# the disk fills up: the kernel refuses writes past 4 KiB (SIGXFSZ ignored: EFBIG)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
for seq in range(2, 7):
    sender._to_spool(Frame(jpeg=b"\xff\xd8" + bytes(20_000) + b"\xff\xd9", ts_us=seq, seq=seq))
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
sender._to_spool(Frame(jpeg=small.jpeg, ts_us=7, seq=7))   # space again
print(json.dumps({"stats": sender.stats.snapshot(), "spool": len(spool),
                  "files": sorted(p.name for p in (state / "spool").iterdir())}))
"""


def test_full_disk_while_spooling_is_a_counted_drop(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "pi"),
                                                         str(Path(__file__).parent),
                                                         str(ROOT / "tests")])}
    out = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path),
                          str(Path(__file__).parent)], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["stats"]["spool_failed"] == 5 and res["stats"]["spooled"] == 2
    assert res["spool"] == 2
    assert [name.split("_")[0].lstrip("0") for name in res["files"]] == ["1", "7"]  # no .tmp
    assert "cannot write frame 2 to the spool" in out.stderr  # logged once, not per frame
    assert out.stderr.count("cannot write frame") == 1


def test_sequence_numbers_that_cannot_be_reserved_are_counted(tmp_path: Path) -> None:
    seq = SequenceCounter(tmp_path / "seq").load()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    seq.path = blocker / "seq"  # the state folder broke after start: every write fails
    sender = Sender(source=FramesSource(6),
                    client=IngestClient("http://127.0.0.1:9", "cam1", "t"),
                    spool=Spool(tmp_path / "spool", 0).open(), seq=seq, fps=0)
    sender.capture_loop()
    st = sender.stats
    assert st.source_frames == 6 and st.seq_failed == 6 and st.captured == 0
    assert st.unaccounted(pending=0) == 0


# -- clock synchronisation ----------------------------------------------------------------------
def test_clock_sync_from_the_timesyncd_flag_or_the_kernel(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    clock = ClockSync(str(flag), recheck_s=0.0, kernel=lambda: False)
    assert not clock.synced()
    flag.write_text("")
    assert clock.synced()
    flag.unlink()
    assert clock.synced()  # once synchronised, it stays so
    assert ClockSync(str(flag), kernel=lambda: True).synced()
    assert not ClockSync(str(flag), kernel=lambda: None).synced()


class _Recorder(BaseHTTPRequestHandler):
    headers_seen: list[dict[str, str]] = []

    def log_message(self, *_a: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_frames_before_time_sync_are_marked(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.headers_seen = []
    synced_after = 3
    calls = {"n": 0}

    def clock() -> bool:
        calls["n"] += 1
        return calls["n"] > synced_after

    try:
        sender = Sender(source=FramesSource(6),
                        client=IngestClient(f"http://127.0.0.1:{server.server_port}", "cam1",
                                            "t"),
                        spool=Spool(tmp_path / "spool", 0).open(),
                        seq=SequenceCounter(tmp_path / "seq").load(), fps=0, queue_size=16,
                        clock_synced=clock)
        assert sender.run() == 0
    finally:
        server.shutdown()
        server.server_close()
    marks = [h.get("x-clock-unsynced") for h in _Recorder.headers_seen]
    assert marks == ["1", "1", "1", None, None, None]
    assert sender.stats.unsynced == 3 and sender.stats.unaccounted(pending=0) == 0
    assert Frame(jpeg=b"", ts_us=0).clock_synced  # the default: synchronised


def test_spool_never_evicts_the_frame_being_sent(tmp_path: Path) -> None:
    """A frame handed to the uploader stays until its outcome is known, so it is counted
    once (delivered or rejected), never also as evicted."""
    spool = Spool(tmp_path / "spool", cap_bytes=3000).open()
    for seq in range(3):
        spool.add(Frame(jpeg=b"\xff\xd8" + bytes(996) + b"\xff\xd9", ts_us=seq, seq=seq))
    sending = spool.peek()
    assert sending is not None and sending.seq == 0
    evicted = sum(spool.add(Frame(jpeg=b"\xff\xd8" + bytes(996) + b"\xff\xd9", ts_us=s,
                                  seq=s)) for s in range(3, 5))
    assert evicted == 2 and spool.evicted == 2
    assert 0 in [seq for seq, _t, _s in spool._index]  # seqs 1 and 2 went instead
    spool.remove(0)
    assert [seq for seq, _t, _s in spool._index] == [3, 4]
