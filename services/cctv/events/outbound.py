"""Where webhooks may connect: public addresses only, unless a webhook allows private ones.

A rules file that names ``http://127.0.0.1:6379/`` or ``http://metadata.internal/`` would make
the events service a proxy into the cluster (Redis, the Docker overlay, a cloud metadata
service). So every webhook connection goes to an address checked *after* resolution, at send
time: the name is resolved once, every address is checked, and the connection is made to a
checked address (the name stays in the Host header and the TLS server name), so a DNS answer
that changes between the check and the connect (rebinding) cannot slip through. Loopback,
private, link-local, unspecified, multicast and every other non-global address are refused
unless the webhook says ``allow_private: true`` (a receiver on the site's own network).
Environment proxies are not used (the proxy's address would be the one checked).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.request
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(OSError):
    """A webhook's destination resolves to an address it may not reach; ``reason`` is one
    word (``loopback``, ``private``, ``link_local``, ``unspecified``, ``multicast``,
    ``not_global``)."""

    def __init__(self, host: str, reason: str, address: str = "") -> None:
        super().__init__(f"destination {host!r}{f' ({address})' if address else ''} refused: "
                         f"{reason.replace('_', '-')} address (set allow_private: true on the "
                         "webhook to allow it)")
        self.host, self.reason, self.address = host, reason, address


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not be reached by a webhook without ``allow_private``, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for reason, flag in (("unspecified", address.is_unspecified),
                         ("loopback", address.is_loopback),
                         ("link_local", address.is_link_local),
                         ("multicast", address.is_multicast),
                         ("private", address.is_private)):
        if flag:
            return reason
    return None if address.is_global else "not_global"


def literal_refusal(url: str) -> str | None:
    """For the config check: why the URL's host, when an address literal (or ``localhost``),
    is refused; None for names (checked when they are resolved, at send time)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return "loopback"
    try:
        return refusal(ipaddress.ip_address(host))
    except ValueError:
        return None


def checked_addresses(host: str, port: int) -> list[tuple]:
    """``getaddrinfo`` of ``host``, refusing (DestinationRefused) when any address is one a
    webhook may not reach: a name must not resolve to a mix of public and private."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)  # gaierror: retried
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        why = refusal(address)
        if why:
            raise DestinationRefused(host, why, str(address))
    return infos


def _guarded_create_connection(address: tuple[str, int], timeout: object = None,
                               source_address: object = None, **_kw: object) -> socket.socket:
    host, port = address
    last: OSError | None = None
    for family, kind, proto, _name, sockaddr in checked_addresses(host, port):
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not None:
                sock.settimeout(timeout)  # type: ignore[arg-type]
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"cannot connect to {host}:{port}")


class _GuardedHTTP(http.client.HTTPConnection):
    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self._create_connection = _guarded_create_connection  # __init__ sets the default


class _GuardedHTTPS(http.client.HTTPSConnection):
    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self._create_connection = _guarded_create_connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request):  # noqa: ANN201 - urllib's signature
        return self.do_open(_GuardedHTTP, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request):  # noqa: ANN201
        return self.do_open(_GuardedHTTPS, req, context=self._context)


def opener(allow_private: bool, *handlers: urllib.request.BaseHandler
           ) -> urllib.request.OpenerDirector:
    """A urllib opener without environment proxies; unless ``allow_private``, every connection
    it makes goes to a checked public address."""
    extra: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({}), *handlers]
    if not allow_private:
        extra += [_HTTPHandler(), _HTTPSHandler()]
    return urllib.request.build_opener(*extra)
