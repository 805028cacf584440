from pathlib import Path

import pytest

from cctv.core.jpeg import JpegError, jpeg_dimensions


def test_dimensions_of_real_images(shared_dir: Path) -> None:
    assert jpeg_dimensions((shared_dir / "media" / "bus.jpg").read_bytes()) == (810, 1080)
    assert jpeg_dimensions((shared_dir / "media" / "zidane.jpg").read_bytes()) == (1280, 720)


@pytest.mark.parametrize("data,reason", [
    (b"", "too short"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "not a JPEG"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 50, "truncated"),
])
def test_rejects(data: bytes, reason: str) -> None:
    with pytest.raises(JpegError, match=reason):
        jpeg_dimensions(data)


def test_truncated_real_image(shared_dir: Path) -> None:
    data = (shared_dir / "media" / "bus.jpg").read_bytes()
    with pytest.raises(JpegError):
        jpeg_dimensions(data[: len(data) // 2])
