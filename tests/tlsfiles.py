"""TLS files for tests, made by the real ``stack/tls`` (openssl): a private CA and a server
certificate for loopback, and the SHA-256 fingerprint a sender pins."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = "localhost,127.0.0.1"


@dataclass(frozen=True)
class TLSFiles:
    """One CA and the server certificate it signed."""

    dir: Path
    fingerprint: str  # SHA-256 of the server certificate, as stack/tls prints it

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def cert(self) -> Path:
        return self.dir / "node.crt"

    @property
    def key(self) -> Path:
        return self.dir / "node.key"


def make_tls(directory: Path, names: str = NAMES) -> TLSFiles:
    """Run ``stack/tls --dir directory names``; returns the files and the fingerprint."""
    out = subprocess.run([str(ROOT / "stack" / "tls"), "--dir", str(directory), names],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return TLSFiles(directory, out.stdout.strip().splitlines()[-1])

