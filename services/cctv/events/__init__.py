"""Events: zones and rules on tracked detections, two-stage verification, snapshots,
captions, storage with retention, webhook/MQTT delivery, and the events viewer.

``cctv events`` (service.py) consumes every configured camera's ``cctv:det:{cam}`` stream
through its own consumer group, so it never slows inference. See docs/events.md.
"""
