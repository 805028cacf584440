"""Plugins: a detector backend, a camera source and an event sink added as one new file each
(written to a temporary folder put on the plugin package's search path), found by their key
and used; an unknown key's error names the known ones."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

import cctv_sender.sources as sources
from cctv.events import sinks
from cctv.events.config import EventsConfigError, parse_config
from cctv.events.service import EventsService
from cctv.inference import backends
from cctv.inference.detector import ModelLoadError, load_detector
from cctv.settings import Settings

TOY_BACKEND = '''
from cctv.inference.backends import Backend
from cctv.inference.detector import Detection


class ToyDetector:
    backend, device = "toy", "cpu"

    def __init__(self, model, conf):
        self.model_name, self.conf, self.calls = model.rsplit("/", 1)[-1], conf, 0

    def detect(self, frames):
        self.calls += 1
        return [[Detection(0, "person", self.conf, (1, 2, 3, 4))] for _ in frames]


BACKEND = Backend("toy", lambda model, *, device, imgsz, conf, iou, classes:
                  ToyDetector(model, conf),
                  accepts=lambda path, on_gpu: path.suffix == ".toy", priority=100)
'''

TOY_SOURCE = '''
from cctv_sender.sources import SourceKind, SourceSpec, split_options
from cctv_sender.sources.base import Source, SourceEnded


class ToySource(Source):
    def __init__(self, count, name):
        self.count, self.name, self.n = count, name, 0

    def open(self):
        pass

    def grab(self):
        if self.n >= self.count:
            raise SourceEnded
        self.n += 1

    def retrieve(self):
        return b"\\xff\\xd8toy%d\\xff\\xd9" % self.n

    def close(self):
        pass


def _parse(raw):
    path, options = split_options(raw.partition(":")[2])
    return SourceSpec("toy", path or "default", options, f"toy:{path}")


TOY = SourceKind("toy", ("toy:",), _parse,
                 lambda spec, o: ToySource(spec.opt_int("count", 2), spec.display),
                 hint="toy:", order=60)
'''

TOY_SINK = '''
from typing import Annotated

from pydantic import Field

from cctv.events.config import Text, ConfigModel
from cctv.events.delivery import Receiver
from cctv.events.sinks import Route, Sink

SENT = []


class Toy(ConfigModel):
    label: Text
    every_s: Annotated[float, Field(strict=True, gt=0)] = 1.0


class ToyReceiver(Receiver):
    def __init__(self, cfg):
        self.cfg, self.name, self.captions_only = cfg, f"toy-{cfg.label}", True
        self.batch_s, self.max_batch, self.max_attempts = cfg.every_s, 10, 1
        self.backoff_s, self.backoff_max_s = 1.0, 1.0

    def send(self, events):
        SENT.extend(events)


SINK = Sink("toy", Toy | None, None,
            names=lambda cfg: [] if cfg is None else [f"toy-{cfg.label}"],
            receivers=lambda cfg, settings, path: [] if cfg is None
            else [Route(ToyReceiver(cfg))], title="toy", order=99)
'''


def _plug(tmp_path: Path, package: ModuleType, registry: dict, name: str, code: str,
          monkeypatch: pytest.MonkeyPatch) -> None:
    """Put a folder holding ``name``.py on ``package``'s search path; undo it all afterwards
    (the registry, the imported modules) so that other tests see the shipped plugins only."""
    folder = tmp_path / package.__name__.rsplit(".", 1)[-1]
    folder.mkdir()
    (folder / f"{name}.py").write_text(textwrap.dedent(code))
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    monkeypatch.setattr(package, "_registry", dict(registry))
    monkeypatch.setattr(package, "_imported", set(package._imported))
    monkeypatch.delitem(sys.modules, f"{package.__name__}.{name}", raising=False)


@pytest.fixture
def toy_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    backends.backends()  # the shipped ones first
    _plug(tmp_path, backends, backends._registry, "toy_backend", TOY_BACKEND, monkeypatch)
    yield
    sys.modules.pop("cctv.inference.backends.toy_backend", None)


@pytest.fixture
def toy_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    sources.kinds()
    _plug(tmp_path, sources, sources._registry, "toy_source", TOY_SOURCE, monkeypatch)
    yield
    sys.modules.pop("cctv_sender.sources.toy_source", None)


@pytest.fixture
def toy_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    sinks.sinks()
    _plug(tmp_path, sinks, sinks._registry, "toy_sink", TOY_SINK, monkeypatch)
    yield
    sys.modules.pop("cctv.events.sinks.toy_sink", None)


def test_a_backend_file_is_found_by_its_key_and_used(toy_backend: None, tmp_path: Path) -> None:
    model = tmp_path / "net.toy"
    model.write_bytes(b"weights")
    assert "toy" in backends.backends()
    assert backends.backend("toy").priority == 100
    frame = np.zeros((48, 64, 3), dtype=np.uint8)
    for choice in ("toy", "auto"):  # named, and picked by auto for the models it accepts
        det = load_detector(str(model), backend=choice, conf=0.4)
        assert (det.backend, det.model_name, det.calls) == ("toy", "net.toy", 1)  # warm-up
        [[found]] = det.detect([frame])
        assert (found.name, found.conf, found.xyxy) == ("person", 0.4, (1, 2, 3, 4))


def test_the_shipped_backends_are_registered() -> None:
    assert {"openvino", "ultralytics"} <= set(backends.backends())


def test_an_unknown_backend_lists_the_known_ones(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"CCTV_INFERENCE_BACKEND=nope: unknown inference "
                       r"backend 'nope'; known: auto, openvino, ultralytics"):
        load_detector(str(model), backend="nope")


def test_a_source_file_is_found_by_its_scheme_and_gives_frames(toy_source: None) -> None:
    spec = sources.parse_source("toy:cam?count=3")
    assert (spec.kind, spec.target, spec.display) == ("toy", "cam", "toy:cam")
    assert "toy" in sources.KINDS
    src = sources.build_source(spec)
    frames = []
    with src, pytest.raises(sources.SourceEnded):
        while True:
            src.grab()
            frames.append(src.retrieve())
    assert frames == [b"\xff\xd8toy1\xff\xd9", b"\xff\xd8toy2\xff\xd9", b"\xff\xd8toy3\xff\xd9"]
    # the error for an unknown scheme names the new one too
    with pytest.raises(ValueError, match=r"unknown scheme; use picamera2:, v4l2:, rtsp://, "
                       r"http://, file: or toy:"):
        sources.parse_source("ftp://cam/x")


def test_an_unknown_source_kind_or_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown scheme; use picamera2:, v4l2:, rtsp://, "
                       r"http:// or file:$"):
        sources.parse_source("ftp://cam/x")
    with pytest.raises(ValueError, match="unknown source kind 'nope'"):
        sources.build_source(sources.SourceSpec("nope", "x"))


def test_the_scan_imports_no_camera_library() -> None:
    code = ("import sys; sys.modules['picamera2'] = sys.modules['cv2'] = None\n"
            "import cctv_sender.sources as s\n"
            "assert {'picamera2', 'v4l2', 'rtsp', 'http', 'file'} <= set(s.kinds())\n"
            "assert s.parse_source('picamera2:1').target == 1\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_sink_file_adds_its_section_and_its_receiver(toy_sink: None) -> None:
    cfg = parse_config({"toy": {"label": "a", "every_s": 2.5}}, "rules.yaml")
    assert cfg.toy.label == "a" and cfg.sinks["toy"].every_s == 2.5
    fake = SimpleNamespace(cfg=cfg, s=Settings(), redis=None, store=None,
                           stop=threading.Event())
    workers = EventsService.receivers(fake)  # type: ignore[arg-type]
    assert [w.rx.name for w in workers] == ["toy-a"]
    assert workers[0].rx.batch_s == 2.5
    # its schema's mistakes read like any other section's
    with pytest.raises(EventsConfigError, match=r"^rules.yaml: toy.every_s: must be > 0$"):
        parse_config({"toy": {"label": "a", "every_s": 0}}, "rules.yaml")
    with pytest.raises(EventsConfigError, match=r"rules.yaml: toy.lable: unknown key "
                       r"\(allowed: every_s, label\)"):
        parse_config({"toy": {"lable": "a"}}, "rules.yaml")
    # receiver names stay unique across sinks
    with pytest.raises(EventsConfigError, match="the name 'toy-a' is taken by the toy receiver"):
        parse_config({"webhooks": [{"name": "toy-a", "url": "https://example.com/h"}],
                      "toy": {"label": "a"}}, "rules.yaml")


def test_an_unknown_section_lists_the_sinks() -> None:
    with pytest.raises(EventsConfigError, match=r"rules.yaml: toy: unknown key \(allowed: "
                       r"cameras, clip_margin_s, exit_grace_s, mqtt, timezone, track_timeout_s, "
                       r"webhooks\)"):
        parse_config({"toy": {}}, "rules.yaml")
    with pytest.raises(KeyError, match="unknown event sink 'nope'; known: webhooks, mqtt"):
        sinks.sink("nope")
