"""What a trusted proxy (CCTV_TRUSTED_PROXIES) says about the client behind a request: its
address (X-Real-IP) and whether it came over HTTPS (X-Forwarded-Proto); from any other peer,
the peer itself and the connection's own scheme."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(peer: str | None, real_ip: str | None, trusted: Sequence[Network]) -> str:
    """``real_ip`` when ``peer`` is in ``trusted`` and ``real_ip`` is an IP address, else
    ``peer`` (``"-"`` when unknown)."""
    if not peer:
        return "-"
    try:
        peer_ip = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if real_ip and any(peer_ip in net for net in trusted):
        try:
            return str(ipaddress.ip_address(real_ip.strip()))
        except ValueError:
            return peer
    return peer


def from_trusted_proxy(peer: str | None, trusted: Sequence[Network]) -> bool:
    """Whether ``peer`` (the TCP peer's address) is one of the trusted proxies."""
    try:
        peer_ip = ipaddress.ip_address(peer or "")
    except ValueError:
        return False
    return any(peer_ip in net for net in trusted)


class TrustedProxyScheme:
    """WSGI middleware: a request that a trusted proxy received over HTTPS (it says so in
    ``X-Forwarded-Proto``; nginx overwrites whatever a client sent) is an HTTPS request here
    too (``wsgi.url_scheme``, so ``request.is_secure`` and external URLs are right). The header
    from any other peer is ignored: a client cannot claim HTTPS it did not use."""

    def __init__(self, app, trusted: Sequence[Network]) -> None:  # noqa: ANN001 - any WSGI app
        self.app, self.trusted = app, tuple(trusted)

    def __call__(self, environ: dict, start_response):  # noqa: ANN204 - the WSGI signature
        proto = environ.get("HTTP_X_FORWARDED_PROTO", "")
        if proto and from_trusted_proxy(environ.get("REMOTE_ADDR"), self.trusted):
            scheme = proto.split(",")[-1].strip().lower()
            if scheme in ("http", "https"):
                environ["wsgi.url_scheme"] = scheme
        return self.app(environ, start_response)
