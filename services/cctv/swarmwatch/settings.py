"""The swarmwatch service's settings section: the Docker socket it alone holds."""

from __future__ import annotations

from dataclasses import dataclass

from cctv.core.settings import Bad, CoreSettings, require_positive


@dataclass(frozen=True)
class SwarmwatchSettings(CoreSettings):
    """What ``cctv swarmwatch`` reads besides :class:`CoreSettings`. Field ``x`` is read from
    ``CCTV_X``."""

    # the manager's Docker Engine API socket, read by `cctv swarmwatch` (never by web)
    swarmwatch_socket: str = "/var/run/docker.sock"
    # how often the swarm snapshot is read and published to Redis
    swarmwatch_interval_s: float = 1.0

    def _validate_section(self, bad: Bad) -> None:
        """Check the fields of this section."""
        require_positive(self, bad, "swarmwatch_interval_s")
