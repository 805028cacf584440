"""Every Redis key name used by cctv-swarm, in one place.

See docs/architecture.md for what each key holds. Nothing else in the code base spells a key.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "cctv"

#: consumer group that inference replicas read frame streams through
INFER_GROUP = "infer"

#: set of camera names that have sent at least one frame
CAMERAS_ACTIVE = f"{PREFIX}:cameras:active"
#: hash camera -> JSON registry entry (core/registry.py): source, node, fps, token digests,
#: detection settings; seeded by ingest from CCTV_CAMERAS, changed by `cctv cameras`
CAMERAS_REGISTRY = f"{PREFIX}:cameras"
#: hash camera -> removal time (ms) of every removed camera; ingest refuses their frames
CAMERAS_REMOVED = f"{PREFIX}:cameras:removed"
#: counter bumped by every registry change (readers refresh their copy when it moves)
CAMERAS_VERSION = f"{PREFIX}:cameras:version"
#: leadership lease of the inference service (string with PX TTL, value = worker id)
LEASE_INFERENCE = f"{PREFIX}:lease:inference"
#: fencing token, INCR on every acquisition of the lease
EPOCH_INFERENCE = f"{PREFIX}:epoch:inference"
#: hash: who held the lease last and whether it released it (for the failover reason)
LEASE_HOLDER = f"{PREFIX}:lease:inference:holder"
#: the replica a leader handed the lease over to (capacity-aware leadership): others do not
#: take the lease while it stands (PX 3 x the lease TTL)
LEASE_PREFER = f"{PREFIX}:lease:inference:prefer"
#: pub/sub channel announcing a released lease so standbys take over at once
LEASE_RELEASED_CHANNEL = f"{PREFIX}:lease:inference:released"
#: hash: epoch, worker and time (ms) of the last published result (for the measured gap)
LEADER_LAST_RESULT = f"{PREFIX}:leader:last"
#: the number of inference shards (CCTV_INFERENCE_SHARDS of the first replica; every replica
#: uses this value, so no camera is ever in two shards at once)
INFERENCE_SHARDS = f"{PREFIX}:inference:shards"
#: the most shards the cameras may be split into (shard k's keys: :func:`shard_keys`)
MAX_SHARDS = 256
#: hash camera -> its shard (inference/shards.py assign): set once, when a replica first sees
#: the camera, to the shard with the fewest cameras; never changed while the count stands
INFERENCE_CAMERA_SHARDS = f"{PREFIX}:inference:camera_shards"
#: stream of every leadership change (and of every change of the Redis primary)
FAILOVERS = f"{PREFIX}:failovers"
#: hash: run_id, address and since (ms) of the Redis primary the dashboard saw last
REDIS_PRIMARY = f"{PREFIX}:redis:primary"


@dataclass(frozen=True)
class ShardKeys:
    """The leadership keys of one inference shard. Shard 0 uses the keys above (one shard is
    the unsharded layout, unchanged); shard ``k`` > 0 appends ``:<k>`` to each."""

    shard: int
    lease: str
    epoch: str
    holder: str
    prefer: str
    last_result: str


def shard_keys(shard: int) -> ShardKeys:
    """The lease, epoch, holder, prefer and last-result keys of inference shard ``shard``."""
    tail = f":{shard}" if shard else ""
    return ShardKeys(shard, LEASE_INFERENCE + tail, EPOCH_INFERENCE + tail, LEASE_HOLDER + tail,
                     LEASE_PREFER + tail, LEADER_LAST_RESULT + tail)


def frames(camera: str) -> str:
    """Stream of JPEG frames sent by ``camera`` (bounded by CCTV_FRAMES_MAXLEN)."""
    return f"{PREFIX}:frames:{camera}"


def frame_index(camera: str) -> str:
    """List of ``"<entry id> <seq>"`` of every frame ingest added to :func:`frames`, oldest
    first, popped as the cap trims them: the backlog-skip script reads ids and seqs here instead
    of copying JPEG payloads."""
    return f"{PREFIX}:frameidx:{camera}"


def detections(camera: str) -> str:
    """Stream of inference results for ``camera``, written only through the fenced script."""
    return f"{PREFIX}:det:{camera}"


def drops(camera: str) -> str:
    """Stream recording every frame dropped by policy: ids, seqs, reason, epoch."""
    return f"{PREFIX}:drops:{camera}"


def stats(camera: str) -> str:
    """Hash of per-camera counters: accepted, duplicate, processed, dropped_<reason>."""
    return f"{PREFIX}:stats:{camera}"


def dedup(camera: str, seq: int) -> str:
    """Marker that (camera, seq) was accepted; expires after CCTV_DEDUP_TTL_S."""
    return f"{PREFIX}:seen:{camera}:{seq}"


def ratelimit(camera: str) -> str:
    """Token-bucket state of ``camera``'s frame rate limit."""
    return f"{PREFIX}:rl:{camera}"


def heartbeat(service: str, instance: str) -> str:
    """Heartbeat hash of one service instance (expires when the instance stops beating)."""
    return f"{PREFIX}:hb:{service}:{instance}"


def heartbeat_pattern(service: str = "*") -> str:
    """SCAN pattern matching the heartbeats of ``service`` (all services by default)."""
    return f"{PREFIX}:hb:{service}:*"


def capture_lease(camera: str) -> str:
    """Which capture instance pulls ``camera`` (string with PX TTL, value = instance id)."""
    return f"{PREFIX}:capture:lease:{camera}"


def capture_epoch(camera: str) -> str:
    """Counter bumped on every acquisition of :func:`capture_lease`."""
    return f"{PREFIX}:capture:epoch:{camera}"


def capture_floor(camera: str) -> str:
    """The lowest seq ingest still accepts for ``camera``: set by a capture instance when it
    takes the camera over (its seqs start there), so a deposed instance's frames are refused."""
    return f"{PREFIX}:capture:floor:{camera}"


def camera_from_frames_key(key: str) -> str:
    """Inverse of :func:`frames`."""
    return key.removeprefix(f"{PREFIX}:frames:")


# --- web viewer and dashboard ---

#: hash status -> count of every ingest frame POST reply, cluster-wide (flushed each heartbeat)
INGEST_RESPONSES = f"{PREFIX}:ingest:responses"

#: sorted set of heartbeat keys scored by the time of their last beat (so the dashboard does
#: not SCAN the keyspace); every heartbeat ZADDs itself, readers trim entries older than an hour
HEARTBEATS = f"{PREFIX}:heartbeats"

#: how long the per-minute ingest reply counts are kept
INGEST_RESPONSES_MINUTE_TTL_S = 7200


def ingest_responses_minute(minute: int) -> str:
    """Hash status -> count of ingest replies in one minute (``minute`` = Unix time // 60)."""
    return f"{PREFIX}:ingest:responses:{minute}"


def heartbeat_parts(key: str) -> tuple[str, str]:
    """Inverse of :func:`heartbeat`: (service, instance) of a heartbeat key."""
    service, _, instance = key.removeprefix(f"{PREFIX}:hb:").partition(":")
    return service, instance


# --- events ---

#: consumer group the events service reads detection streams through
EVENTS_GROUP = "events"
#: stream of emitted events (``type`` event.start / event.end), MAXLEN ~ CCTV_EVENTS_MAXLEN
EVENTS = f"{PREFIX}:events"
#: stream of webhook/MQTT batches given up after their last attempt
EVENTS_DEADLETTER = f"{PREFIX}:events:deadletter"
#: hash of events counters: emitted, unconfirmed, delivered/failed/dead-lettered per receiver
EVENTS_STATS = f"{PREFIX}:events:stats"
#: sorted set of every stored event id, scored by start time (ms)
EVENTS_INDEX = f"{PREFIX}:events:idx"
#: set of every facet index key (so that retention can find them all)
EVENTS_INDEX_KEYS = f"{PREFIX}:events:idx:keys"
#: sorted set of event ids whose MP4 clip is still to be written, scored by when it is due (ms)
EVENTS_CLIPS = f"{PREFIX}:events:clips"


def track_state(camera: str) -> str:
    """The inference leader's serialized tracker of ``camera`` (written fenced, with the epoch)."""
    return f"{PREFIX}:track:{camera}"


def event(event_id: str) -> str:
    """Hash of one stored event: camera, rule, track, times, caption, snapshot and crop paths."""
    return f"{PREFIX}:event:{event_id}"


def events_index(facet: str, value: str) -> str:
    """Sorted set of event ids by start time for one facet value (camera, class, zone, rule,
    caption word)."""
    return f"{PREFIX}:events:idx:{facet}:{value}"


def rules_state(camera: str) -> str:
    """The events service's rule state of ``camera`` (JSON), saved with each acked entry."""
    return f"{PREFIX}:events:state:{camera}"


def unconfirmed(candidate_id: str) -> str:
    """Marker (1 day TTL) that a rejected candidate was counted as unconfirmed once."""
    return f"{PREFIX}:events:unconfirmed:{candidate_id}"


def line_counts(camera: str) -> str:
    """Hash ``<rule>:<direction>`` -> number of line crossings counted for ``camera``."""
    return f"{PREFIX}:events:lines:{camera}"


def delivery_group(receiver: str) -> str:
    """Consumer group of one webhook/MQTT receiver on the events stream."""
    return f"deliver:{receiver}"


# --- web viewer sessions ---
def web_session(session_id: str) -> str:
    """STRING with the user name of one viewer login (TTL = the session lifetime); the session
    cookie carries only its id, so logout (DEL) ends every copy of the cookie."""
    return f"{PREFIX}:web:session:{session_id}"


# --- the swarm snapshot (nodes, services, tasks), published by `cctv swarmwatch` ---
#: STRING (JSON, core/swarmsnap.py) with a TTL; web reads it instead of the Docker socket
SWARM_SNAPSHOT = f"{PREFIX}:swarm:snapshot"
