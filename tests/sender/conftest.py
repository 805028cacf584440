"""Fixtures for the sender tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sender_support import Ingest, make_jpeg  # noqa: E402
from support import free_port  # noqa: E402


@pytest.fixture()
def ingest(redis_server, rdb, tmp_path: Path):
    """A factory of real ingests on fixed ports (stoppable and restartable)."""
    made: list[Ingest] = []

    def make(**cctv: object) -> Ingest:
        ing = Ingest(redis_server.url, free_port(), tmp_path, **cctv)
        made.append(ing)
        return ing.start()

    yield make
    for ing in made:
        ing.stop()


@pytest.fixture(scope="session")
def jpegs() -> list[bytes]:
    """Ten small distinct JPEGs."""
    return [make_jpeg(i) for i in range(10)]
