"""The piece in Prometheus's text format, written by `prometheus_client` from a registry
of its own (not the library's global one, so nothing else's metrics join in)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

ENTROPY_BUCKETS = (0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 7, 8, 10, 12)
FRAME_BUCKETS = (0.001, 0.002, 0.004, 0.006, 0.008, 0.012, 0.016, 0.025, 0.05, 0.1, 0.25)


class PieceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.tokens = Counter("permanent_tokens_shown", "Tokens shown on the screen",
                              registry=registry)
        self.passes = Counter("permanent_passes", "Passes written to their end",
                              registry=registry)
        self.entropy = Histogram("permanent_token_entropy_bits",
                                 "Entropy of each shown token's distribution, in bits",
                                 buckets=ENTROPY_BUCKETS, registry=registry)
        self.fan_hz = Gauge("permanent_fan_hz", "The lead fan's blade-pass frequency, Hz",
                            registry=registry)
        self.hum_level = Gauge("permanent_hum_level", "The hum's volume, 0 to 1",
                               registry=registry)
        self.restarts = Counter("permanent_process_restarts",
                                "Restarts of a child process", ["process"], registry=registry)
        self.dropouts = Counter("permanent_hum_dropouts",
                                "Times the hum reported its sound stopped reaching the room",
                                registry=registry)
        self.frame_seconds = Histogram("permanent_frame_seconds",
                                       "Time the main loop took to make a frame, seconds",
                                       buckets=FRAME_BUCKETS, registry=registry)
        for process in ("hum", "model"):
            self.restarts.labels(process)   # present at 0 before the first restart

    def text(self) -> bytes:
        return generate_latest(self.registry)
