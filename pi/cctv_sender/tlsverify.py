"""How the sender checks ingest's TLS certificate (standard library ``ssl`` only).

Three ways, by what the user gives:

* nothing: the system's trusted CAs, and the certificate must name the host of the URL;
* ``--ca-file``: that CA (a private one, as ``stack/deploy`` makes) instead, host name checked;
* ``--pin-sha256``: the server's certificate must have exactly this SHA-256 fingerprint (a
  self-signed certificate, as ``cctv local --bind-lan`` makes); with ``--ca-file`` too, both
  must hold.

A certificate that fails raises :class:`CertificateRefused` (an ``OSError``), whose message
says why in one line.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import ssl
from dataclasses import dataclass

_HEX = re.compile(r"^[0-9a-f]{64}$")


class CertificateRefused(OSError):
    """Ingest's certificate is not the one this sender trusts; the message says why."""


def normalize_pin(raw: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits; colons, spaces and a ``sha256:``
    prefix are accepted (``openssl x509 -fingerprint -sha256`` prints ``AB:CD:...``).
    Raises ValueError for anything else."""
    pin = raw.strip().lower()
    pin = pin.removeprefix("sha256:").removeprefix("sha256=")
    pin = pin.replace(":", "").replace(" ", "")
    if not _HEX.fullmatch(pin):
        raise ValueError(f"{raw!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return pin


def fingerprint(der: bytes) -> str:
    """SHA-256 of a certificate's DER bytes, as 64 lowercase hex digits."""
    return hashlib.sha256(der).hexdigest()


def spaced(pin: str) -> str:
    """``ab:cd:...`` upper case, the way openssl prints a fingerprint."""
    return ":".join(pin[i:i + 2] for i in range(0, len(pin), 2)).upper()


@dataclass(frozen=True)
class TLSOptions:
    """What the user gave: a CA file and/or a pinned fingerprint (64 hex digits)."""

    ca_file: str = ""
    pin_sha256: str = ""

    def describe(self) -> str:
        """How the certificate is checked, for the start-up log line."""
        parts = []
        if self.ca_file:
            parts.append(f"CA {self.ca_file}")
        if self.pin_sha256:
            parts.append(f"pinned SHA-256 {self.pin_sha256[:16]}...")
        return " and ".join(parts) or "the system's trusted CAs"

    def context(self) -> ssl.SSLContext:
        """The client context: TLS 1.2 or newer, certificate and host name verified unless
        only a pin is given (then the pin alone decides, in :class:`VerifiedHTTPSConnection`)."""
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise CertificateRefused(f"CA file {self.ca_file}: "
                                     f"{getattr(exc, 'strerror', None) or exc}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.pin_sha256 and not self.ca_file:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


class VerifiedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection that also checks the pinned fingerprint right after the handshake
    (before a byte of the request, and so the token, is sent)."""

    def __init__(self, host: str, port: int, timeout: float, options: TLSOptions) -> None:
        super().__init__(host, port, timeout=timeout, context=options.context())
        self.options = options

    def connect(self) -> None:
        """Connect, handshake, check; raises :class:`CertificateRefused` with the reason."""
        try:
            super().connect()
        except ssl.SSLCertVerificationError as exc:
            self.close()
            reason = exc.verify_message or exc.reason or str(exc)
            hint = "" if self.options.ca_file or self.options.pin_sha256 else \
                " (a private CA? give it with --ca-file, or pin it with --pin-sha256)"
            raise CertificateRefused(f"TLS certificate of {self.host}:{self.port} refused: "
                                     f"{reason}{hint}") from None
        if self.options.pin_sha256:
            der = self.sock.getpeercert(binary_form=True) or b""
            got = fingerprint(der)
            if got != self.options.pin_sha256:
                self.close()
                want = spaced(self.options.pin_sha256)
                raise CertificateRefused(
                    f"TLS certificate of {self.host}:{self.port} refused: its SHA-256 "
                    f"fingerprint {spaced(got)} is not the pinned {want}")


def is_tls_refusal(exc: BaseException) -> bool:
    """Whether a connection error is a refused certificate (rather than a network problem)."""
    return isinstance(exc, CertificateRefused | ssl.SSLCertVerificationError)
