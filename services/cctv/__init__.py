"""cctv-swarm: real-time CCTV object detection with active-standby inference on Docker Swarm."""

__version__ = "0.1.0"
