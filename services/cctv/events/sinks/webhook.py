"""The ``webhooks`` sink: HTTP receivers of signed event batches (see events/delivery.py for
batching, retries and the signature)."""

from __future__ import annotations

import http.client
import json
import logging
import re
import time
import urllib.error
import urllib.request
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, StrictBool, model_validator

from cctv.events.config import (
    ConfigModel,
    Count,
    EventsConfigError,
    ItemName,
    NonNegative,
    Positive,
    Text,
    or_default,
)
from cctv.events.delivery import (
    REFUSED,
    USER_AGENT,
    DeliveryError,
    Receiver,
    iso_time,
    sign,
)
from cctv.events.outbound import DestinationRefused, literal_refusal, opener
from cctv.events.settings import EventsSettings
from cctv.events.sinks import Route, Sink

log = logging.getLogger("cctv.events.delivery")


def _http_url(url: str) -> str:
    if not re.match(r"^https?://[^\s/]+", url):
        raise ValueError(f"{url!r} is not an http(s) URL")
    return url


class Webhook(ConfigModel):
    """An HTTP receiver of signed event batches."""

    name: ItemName
    url: Annotated[Text, AfterValidator(_http_url)]
    batch_s: NonNegative = 10.0
    max_batch: Count = 100
    max_attempts: Count = 8
    backoff_s: Positive = 1.0
    backoff_max_s: Positive = 60.0
    timeout_s: Positive = 5.0
    captions_only: StrictBool = False
    images: list[Literal["crop", "snapshot"]] = ["crop"]
    # loopback, private, link-local... destinations are refused unless this is true
    # (events/outbound.py checks the resolved address at every connection)
    allow_private: StrictBool = False

    @model_validator(mode="after")
    def _public_unless_allowed(self) -> Webhook:
        why = literal_refusal(self.url)
        if why and not self.allow_private:
            raise ValueError(f"url: {self.url!r} is a {why.replace('_', '-')} address; a "
                             "webhook reaches only public addresses unless it sets "
                             "allow_private: true")
        return self


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kw: object) -> None:
        return None  # a redirect is an answer to check, not to follow with our signed body




class WebhookReceiver(Receiver):
    """POSTs JSON batches to a URL, signed with the shared secret."""

    def __init__(self, cfg: Webhook, secret: str) -> None:
        self.cfg, self.secret = cfg, secret
        self.name, self.batch_s, self.max_batch = cfg.name, cfg.batch_s, cfg.max_batch
        self.max_attempts, self.backoff_s = cfg.max_attempts, cfg.backoff_s
        self.backoff_max_s, self.captions_only = cfg.backoff_max_s, cfg.captions_only
        self._opener = opener(cfg.allow_private, _NoRedirect())

    def send(self, events: list[dict]) -> None:
        body = json.dumps({"receiver": self.name, "batch": uuid.uuid4().hex,
                           "sent_at": iso_time(time.time() * 1000), "count": len(events),
                           "events": events}, separators=(",", ":")).encode()
        ts = str(int(time.time()))
        req = urllib.request.Request(self.cfg.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT,
            "X-CCTV-Timestamp": ts, "X-CCTV-Signature": sign(self.secret, ts, body)})
        try:
            with self._opener.open(req, timeout=self.cfg.timeout_s) as resp:
                resp.read(65536)
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            retry_after = _retry_after(exc.headers.get("Retry-After"))
            exc.close()
            final = 300 <= status < 500 and status not in (408, 425, 429)
            raise DeliveryError(f"HTTP {status}", final=final,
                                retry_after_s=retry_after) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, DestinationRefused):
                REFUSED.labels(self.name).inc()
                log.error("receiver %s: %s; not sent", self.name, exc.reason,
                          extra={"receiver": self.name, "reason": exc.reason.reason})
                raise DeliveryError(str(exc.reason), final=True) from None
            raise DeliveryError(f"URLError: {str(exc.reason)[:200]}") from None
        except (OSError, TimeoutError, http.client.HTTPException, ValueError) as exc:
            # HTTPException: a receiver that closes the connection mid-answer or answers
            # something that is not HTTP
            reason = str(getattr(exc, "reason", exc))[:200]
            raise DeliveryError(f"{type(exc).__name__}: {reason}") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}", final=300 <= status < 500)


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


def _check(hooks: list[Webhook], path: str) -> None:
    names = [h.name for h in hooks]
    if len(set(names)) != len(names):
        raise EventsConfigError(f"{path}: webhooks: two webhooks have the same name")


def _receivers(hooks: list[Webhook], settings: EventsSettings, path: str) -> list[Route]:
    if hooks and not settings.webhook_secret:
        raise EventsConfigError(f"{path}: webhooks are configured but "
                                "CCTV_WEBHOOK_SECRET (or CCTV_WEBHOOK_SECRET_FILE) is not "
                                "set: payloads are always signed")
    return [Route(WebhookReceiver(hook, settings.webhook_secret), images=hook.images)
            for hook in hooks]


def _names(hooks: Any) -> list[str]:
    return [h.name for h in hooks]


SINK = Sink("webhooks", Annotated[list[Webhook], or_default([])], (), names=_names,
            receivers=_receivers, check=_check, title="webhook", order=10)
