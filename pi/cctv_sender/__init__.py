"""cctv-sender: ship camera frames (JPEG) to cctv-swarm's ingest over HTTP."""

__version__ = "0.1.0"
