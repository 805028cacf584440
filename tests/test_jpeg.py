from pathlib import Path

import pytest

from cctv.core.jpeg import FrameLimits, JpegError, jpeg_dimensions, jpeg_info


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


_KIND_STATUS = {"malformed": 400, "unsupported": 415, "too_large": 413}


def _good_640x480() -> bytes:
    import cv2
    import numpy as np

    img = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", cv2.GaussianBlur(img, (9, 9), 3))[1].tobytes()


def test_every_hostile_body_gets_the_status_ingest_gives_it() -> None:
    """The parser's verdict on each hostile case (tests/hostile_inputs.py) is the status the
    process tests expect from ingest (the oversized body is ingest's size check, not this)."""
    from hostile_inputs import body_cases

    for case in body_cases(_good_640x480(), 10_000_000):
        try:
            jpeg_info(case.body)
            status = 202
        except JpegError as exc:
            status = _KIND_STATUS[exc.kind]
        if case.name != "oversized":
            assert status in case.ingest, (case.name, status)


def test_limits_are_configurable() -> None:
    good = _good_640x480()
    assert jpeg_info(good, FrameLimits(640, 480, 640 * 480)).width == 640
    for limits in (FrameLimits(639, 480, 10**6), FrameLimits(640, 479, 10**6),
                   FrameLimits(640, 480, 640 * 480 - 1)):
        with pytest.raises(JpegError, match="over the limit") as exc:
            jpeg_info(good, limits)
        assert exc.value.kind == "too_large"


def test_exif_thumbnail_frame_header_is_not_a_second_frame() -> None:
    """A frame header inside an APP segment (an EXIF thumbnail) is skipped with its segment."""
    good = _good_640x480()
    thumb = _good_640x480()[:2000]  # SOI + headers (with a SOF) of another JPEG
    app1 = b"Exif\x00\x00" + thumb
    with_thumb = good[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + good[2:]
    assert jpeg_info(with_thumb).width == 640


def test_decoder_never_raises_opencv_errors() -> None:
    from cctv.core.jpeg_decode import decode_jpeg

    from hostile_inputs import tiny_huge_jpeg

    with pytest.raises(JpegError, match="over the limit"):
        decode_jpeg(tiny_huge_jpeg())
    # the header check alone refused it; with limits above OpenCV's own, OpenCV's refusal
    # comes back as a JpegError too
    with pytest.raises(JpegError):
        decode_jpeg(tiny_huge_jpeg(), FrameLimits(65535, 65535, 2**33))
    assert decode_jpeg(_good_640x480()).shape == (480, 640, 3)


def test_a_frame_decodes_no_larger_than_the_model_needs() -> None:
    import cv2
    import numpy as np

    from cctv.core.jpeg_decode import decode_jpeg, decode_jpeg_at

    img = np.zeros((720, 1280, 3), np.uint8)
    cv2.rectangle(img, (640, 360), (960, 540), (255, 255, 255), -1)
    data = cv2.imencode(".jpg", img)[1].tobytes()
    half, size = decode_jpeg_at(data, min_side=640)
    assert half.shape == (360, 640, 3) and size == (1280, 720)
    # the white box is where it was, at half the scale
    ys, xs = np.nonzero(half[:, :, 0] > 128)
    assert abs(xs.min() - 320) <= 1 and abs(ys.min() - 180) <= 1
    assert decode_jpeg_at(data, min_side=320)[0].shape == (180, 320, 3)
    assert decode_jpeg_at(data, min_side=1280)[0].shape == (720, 1280, 3)
    assert decode_jpeg_at(data)[0].shape == decode_jpeg(data).shape == (720, 1280, 3)
    # an odd size decodes to the rounded-up fraction, and the full size is kept
    odd = cv2.imencode(".jpg", np.zeros((481, 1281, 3), np.uint8))[1].tobytes()
    small, size = decode_jpeg_at(odd, min_side=320)
    assert size == (1281, 481) and small.shape[1] in (320, 321)


def test_detections_of_a_smaller_decode_are_given_in_pixels_of_the_frame_as_sent() -> None:
    import numpy as np

    from cctv.inference.detector import Detection
    from cctv.inference.processor import to_full_size
    from cctv.inference.records import Frame

    frame = Frame("cam", None, 0, image=np.zeros((360, 640, 3), np.uint8), size=(1280, 720))
    d = Detection(0, "person", 0.9, (10, 20, 630, 359), track=4)
    (full,) = to_full_size([d], frame)
    assert full.xyxy == (20, 40, 1260, 718) and full.track == 4 and full.conf == 0.9
    assert frame.full_size == (1280, 720)
    same = Frame("cam", None, 0, image=np.zeros((720, 1280, 3), np.uint8), size=(1280, 720))
    assert to_full_size([d], same) == [d]
