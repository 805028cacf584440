"""The address of the client behind a request: the proxy's X-Real-IP when the peer is a
trusted proxy (CCTV_TRUSTED_PROXIES), else the peer itself."""

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
