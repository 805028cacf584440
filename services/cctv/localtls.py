"""``cctv local --bind-lan``: a self-signed certificate for nginx, made once in the data dir.

A LAN has no CA of ours, so the certificate is self-signed and senders pin its SHA-256
fingerprint (``cctv-sender --pin-sha256``); browsers warn once. Made with the openssl CLI
(ECDSA P-256), kept across runs so that the pin stays valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import socket
import ssl
import subprocess
from pathlib import Path


class LocalTLSError(RuntimeError):
    """openssl is missing or failed."""


def lan_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: only selects the route
        addr = s.getsockname()[0]
        if not ipaddress.ip_address(addr).is_loopback:
            return addr
    return None


def subject_alt_names(host: str) -> list[str]:
    """localhost, 127.0.0.1, the host name and the LAN address, as openssl SAN entries."""
    names = ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    if host and host != "localhost":
        names.append(f"DNS:{host}")
    addr = lan_address()
    if addr:
        names.append(f"IP:{addr}")
    return names


def fingerprint_sha256(cert: Path) -> str:
    """The certificate's SHA-256 fingerprint as openssl prints it (``AB:CD:...``)."""
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def ensure_certificate(directory: Path, days: int = 825) -> tuple[Path, Path, bool]:
    """``(cert, key, created)``: the certificate and key in ``directory``, made on first use."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key = directory / "local.crt", directory / "local.key"
    if cert.is_file() and key.is_file():
        return cert, key, False
    tmp_key = directory / "local.key.new"
    cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-sha256", "-days", str(days), "-subj", "/O=cctv-swarm/CN=cctv local",
           "-addext", "subjectAltName=" + ",".join(subject_alt_names(socket.gethostname())),
           "-addext", "basicConstraints=critical,CA:FALSE",
           "-addext", "extendedKeyUsage=serverAuth",
           "-keyout", str(tmp_key), "-out", str(directory / "local.crt.new")]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise LocalTLSError("openssl is not installed (apt-get install openssl)") from None
    if out.returncode != 0:
        raise LocalTLSError(f"openssl failed: {out.stderr.strip()[-500:]}")
    tmp_key.chmod(0o600)
    tmp_key.replace(key)
    (directory / "local.crt.new").replace(cert)
    return cert, key, True
