"""``cctv model prepare``: turn a YOLO ``.pt`` into the fastest model this machine can run.

On a CPU machine the weights are exported to OpenVINO (the inference images run OpenVINO
directly, without torch); on a machine with a CUDA GPU and TensorRT installed, to a TensorRT
engine. The export goes through ultralytics, offline. The prepared model is then loaded with the
same loader the inference service uses and timed against the original weights, and the command
prints the ``CCTV_MODEL`` and ``CCTV_IMGSZ`` lines to use.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Export formats by target: (ultralytics format name, what the output is called).
TARGETS = {
    "openvino": ("openvino", "OpenVINO model folder"),
    "tensorrt": ("engine", "TensorRT engine"),
    "onnx": ("onnx", "ONNX file"),
}


class PrepareError(RuntimeError):
    """The weights cannot be prepared; the message says why and what to do."""


@dataclass(frozen=True)
class Prepared:
    """A prepared model and how fast it ran against the original weights."""

    path: Path
    target: str
    device: str
    imgsz: int
    export_s: float
    ms_per_frame: float
    original_ms_per_frame: float | None


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda_available() -> bool:
    if not _has("torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())


def choose_target(requested: str) -> tuple[str, str]:
    """The export target and device for ``requested`` (``auto`` = the fastest here)."""
    gpu = _cuda_available()
    if requested == "auto":
        if gpu:
            if not _has("tensorrt"):
                raise PrepareError(
                    "this machine has a CUDA GPU but TensorRT is not installed (pip install "
                    "tensorrt); the .pt already runs on the GPU as it is, or give --target onnx")
            return "tensorrt", "0"
        if not _has("openvino"):
            raise PrepareError("OpenVINO is not installed (pip install openvino); "
                               "or give --target onnx")
        return "openvino", "cpu"
    if requested == "tensorrt":
        if not gpu:
            raise PrepareError("--target tensorrt needs a CUDA GPU on this machine")
        if not _has("tensorrt"):
            raise PrepareError("--target tensorrt needs TensorRT (pip install tensorrt)")
        return "tensorrt", "0"
    if requested == "openvino" and not _has("openvino"):
        raise PrepareError("--target openvino needs OpenVINO (pip install openvino)")
    return requested, "cpu"


def _check_weights(weights: Path) -> None:
    if not weights.exists():
        raise PrepareError(f"{weights}: no such file")
    if weights.is_dir() or weights.suffix in (".onnx", ".engine"):
        raise PrepareError(f"{weights} is already an exported model: use it as CCTV_MODEL as it "
                           "is (prepare takes the .pt weights)")
    if weights.suffix != ".pt":
        raise PrepareError(f"{weights}: expected YOLO weights ending in .pt")


def _time_model(model: Path, *, device: str, imgsz: int, frame: np.ndarray,
                rounds: int) -> float:
    """Median ms of one detection with ``model``, loaded by the inference service's loader."""
    from cctv.inference.detector import load_detector

    det = load_detector(str(model), device=device, imgsz=imgsz, warmup=True)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        det.detect([frame])
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def prepare(weights: Path, *, target: str = "auto", imgsz: int = 640, out: Path | None = None,
            sample: Path | None = None, rounds: int = 5, compare: bool = True) -> Prepared:
    """Export ``weights`` for ``target`` into ``out`` (default: beside the weights), check that
    it loads and detects, and time it against the original weights.

    Raises :class:`PrepareError` with a message for the user when it cannot.
    """
    _check_weights(weights)
    if imgsz % 32 or not 32 <= imgsz <= 2048:
        raise PrepareError(f"--imgsz {imgsz}: use a multiple of 32 between 32 and 2048")
    if not _has("ultralytics"):
        raise PrepareError("exporting needs ultralytics, which is not installed here; run this "
                           "on a machine with the full install (./dev setup) or the GPU image")
    chosen, device = choose_target(target)
    fmt, what = TARGETS[chosen]
    out = (out or weights.parent).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryDirectory(dir=out, prefix=".cctv-prepare-")
    except OSError as exc:
        raise PrepareError(f"cannot write to {out}: {exc.strerror}; give --out DIR") from None
    suffix = {"openvino": "_openvino_model", "engine": ".engine", "onnx": ".onnx"}[fmt]
    final = out / f"{weights.stem}_{imgsz}{suffix}"
    frame = _sample_frame(sample)
    with probe as work:
        # ultralytics writes the export beside the weights it was given: work on a copy so the
        # original folder (often read-only, or shared) is left alone.
        local = Path(work) / weights.name
        shutil.copyfile(weights, local)
        try:
            from ultralytics import YOLO

            started = time.perf_counter()
            extra = {"half": True} if chosen == "tensorrt" else {}
            produced = YOLO(str(local), task="detect").export(
                format=fmt, imgsz=imgsz, device=device, verbose=False, **extra)
            export_s = time.perf_counter() - started
        except Exception as exc:  # any exporter failure becomes one line for the user
            why = _first_line(exc).replace(str(local), str(weights))
            raise PrepareError(f"{weights}: export to {what} failed: {why}") from exc
        if final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        shutil.move(str(produced), final)
    try:
        ms = _time_model(final, device=device, imgsz=imgsz, frame=frame, rounds=rounds)
        original = (_time_model(weights, device=device, imgsz=imgsz, frame=frame, rounds=rounds)
                    if compare else None)
    except Exception as exc:
        raise PrepareError(f"{final}: the prepared model does not load or run: "
                           f"{_first_line(exc)}") from exc
    return Prepared(final, chosen, device, imgsz, export_s, ms, original)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].removeprefix("ERROR ❌️ ").strip()


def _sample_frame(sample: Path | None) -> np.ndarray:
    if sample is None:
        return np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    import cv2

    img = cv2.imread(str(sample))
    if img is None:
        raise PrepareError(f"--sample {sample}: not an image OpenCV can read")
    return img


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``cctv model prepare`` on the CLI's subcommands."""
    sp = sub.add_parser("model", help="prepare YOLO weights for the fastest backend here")
    msub = sp.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    pp = msub.add_parser(
        "prepare", help="export a .pt to OpenVINO (CPU) or TensorRT (GPU) and print CCTV_MODEL",
        description="Export YOLO .pt weights to the fastest backend of this machine (OpenVINO "
        "on a CPU, TensorRT on a CUDA GPU), check that the result loads and detects, time it "
        "against the .pt, and print the CCTV_MODEL and CCTV_IMGSZ to use. Works offline.")
    pp.add_argument("weights", type=Path, help="YOLO weights (.pt)")
    pp.add_argument("--target", choices=["auto", *TARGETS], default="auto",
                    help="export format (default auto: tensorrt with a GPU, else openvino)")
    pp.add_argument("--imgsz", type=int, default=640,
                    help="input size the model is exported for; use the same CCTV_IMGSZ "
                    "(default 640; 320 is about 4x less work per frame)")
    pp.add_argument("--out", type=Path,
                    help="folder for the prepared model (default: beside the weights)")
    pp.add_argument("--sample", type=Path, help="an image to time the models on")
    pp.add_argument("--no-compare", action="store_true",
                    help="do not time the original .pt (faster)")
    pp.set_defaults(func=cmd_model_prepare)


def cmd_model_prepare(args: argparse.Namespace) -> int:
    """Run ``cctv model prepare``: exit 0 and print the settings, or 2 with one error line."""
    try:
        p = prepare(args.weights, target=args.target, imgsz=args.imgsz, out=args.out,
                    sample=args.sample, compare=not args.no_compare)
    except PrepareError as exc:
        print(f"cctv model prepare: {exc}", file=sys.stderr)
        return 2
    where = "GPU" if p.device != "cpu" else "CPU"
    print(f"prepared {args.weights.name} for {p.target} on the {where} at imgsz {p.imgsz} "
          f"in {p.export_s:.1f} s: {p.path}")
    line = f"one frame: {p.ms_per_frame:.1f} ms"
    if p.original_ms_per_frame is not None:
        line += f" (the .pt: {p.original_ms_per_frame:.1f} ms)"
    print(line)
    print("use it with:")
    print(f"  CCTV_MODEL={p.path}")
    print(f"  CCTV_IMGSZ={p.imgsz}")
    return 0
