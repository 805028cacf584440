"""Several ingest URLs (one per node): a frame goes to the next one when the current one is down.

In the stack ingest runs on every node, so when one node dies (the manager included) the others
still take frames. :class:`FailoverClient` holds one :class:`IngestClient` per URL and posts
each frame to the current one; when that one cannot be reached, refuses the connection's
certificate or answers 5xx, the same frame is offered to the next URL at once, and the one that
takes it becomes the current one. Resending a frame is safe: ingest de-duplicates on
(camera, seq) in Redis, which every ingest shares. A frame that no URL takes is kept by the
sender (spooled) like any other retry. 429 (the camera's rate limit, shared by every ingest) and
4xx refusals are answered as they are: another node would say the same.
"""

from __future__ import annotations

import logging

from cctv_sender.client import IngestClient, Outcome, Reply
from cctv_sender.frame import Frame
from cctv_sender.tlsverify import TLSOptions

log = logging.getLogger("cctv_sender.failover")


def _node_down(reply: Reply) -> bool:
    """Another ingest may take what this reply refused."""
    return reply.outcome is Outcome.RETRY and (reply.status == 0 or reply.status >= 500)


class FailoverClient:
    """Posts frames to the first ingest of ``urls`` that takes them (the same interface as
    :class:`IngestClient` for the sender)."""

    def __init__(self, urls: list[str] | tuple[str, ...], camera: str, token: str,
                 timeout_s: float = 10.0, tls: TLSOptions | None = None) -> None:
        if not urls:
            raise ValueError("no ingest URL")
        self.clients = [IngestClient(u, camera, token, timeout_s=timeout_s, tls=tls)
                        for u in urls]
        self.current = 0
        self.switches = 0

    def set_token(self, token: str) -> None:
        """Send with ``token`` from the next frame on, to every ingest."""
        for c in self.clients:
            c.set_token(token)

    @property
    def client(self) -> IngestClient:
        """The ingest frames go to now."""
        return self.clients[self.current]

    @property
    def scheme(self) -> str:
        """http or https (the same for every URL)."""
        return self.client.scheme

    @property
    def base_url(self) -> str:
        """The base URL of the ingest frames go to now."""
        return self.client.base_url

    @property
    def connects(self) -> int:
        """Connections opened, to any ingest."""
        return sum(c.connects for c in self.clients)

    def post(self, frame: Frame) -> Reply:
        """Send one frame, to the next ingest when the current one is down; never raises."""
        first = self.current
        reply = self.client.post(frame)
        why = []
        for _ in range(len(self.clients) - 1):
            if not _node_down(reply):
                break
            why.append(f"{self.client.base_url}: {reply.message or reply.status}")
            self.client.close()
            self.current = (self.current + 1) % len(self.clients)
            reply = self.client.post(frame)
        if _node_down(reply):
            self.current = first  # none took it: the sender retries, from the same one
        elif self.current != first:
            self.switches += 1
            log.warning("ingest down (%s): frames go to %s now", "; ".join(why),
                        self.client.base_url)
        return reply

    def close(self) -> None:
        """Close every connection."""
        for c in self.clients:
            c.close()

