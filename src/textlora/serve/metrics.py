"""The server's Prometheus metrics, kept by `prometheus_client` in a registry of their own per app (several apps in
one process, as in the tests, never share a series), exposed as text at `GET /metrics`.

| metric | type | labels | what |
|---|---|---|---|
| `textlora_requests_total` | counter | path, status | HTTP requests answered (499: the client went away) |
| `textlora_request_duration_seconds` | histogram | path | HTTP request latency |
| `textlora_texts_total` | counter | model | texts classified |
| `textlora_batch_size_texts` | histogram | model | texts per forward pass |
| `textlora_batch_size_requests` | histogram | model | requests per forward pass |
| `textlora_requests_in_progress` | gauge | | HTTP requests received and not yet answered |
| `textlora_queue_depth_texts` | gauge | | texts waiting for a forward pass (bounded by --max-queue) |
| `textlora_inflight_texts` | gauge | | texts in the forward pass running now |

Counters and histograms also get prometheus_client's `<name>_created` series (the time each series started).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Request latency buckets, seconds."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""Texts-per-forward-pass buckets."""
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of `render()`'s text (Prometheus' text format 0.0.4)."""


class ServerMetrics:
    """The server's metric families in their own `CollectorRegistry`; `render()` is the body of `GET /metrics`.

    Args:
        registry: where the metrics live; None: a new registry (prometheus_client's global one is never used, so two
            apps in one process keep their own counts).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("textlora_requests_total", "HTTP requests by path and status code.",
                                ("path", "status"), registry=r)
        self.latency = Histogram("textlora_request_duration_seconds", "HTTP request latency by path.",
                                 ("path",), buckets=LATENCY_BUCKETS, registry=r)
        self.texts = Counter("textlora_texts_total", "Texts classified, by model.", ("model",), registry=r)
        self.batch_size = Histogram("textlora_batch_size_texts", "Texts per forward pass, by model.",
                                    ("model",), buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("textlora_batch_size_requests", "Requests per forward pass, by model.",
                                        ("model",), buckets=BATCH_BUCKETS, registry=r)
        self.in_progress = Gauge("textlora_requests_in_progress", "HTTP requests received and not yet answered.",
                                 registry=r)
        self.queue_depth = Gauge("textlora_queue_depth_texts", "Texts waiting for a forward pass, over all models "
                                 "(at most --max-queue together with the texts in the pass).", registry=r)
        self.inflight = Gauge("textlora_inflight_texts", "Texts in the forward pass running now.", registry=r)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request and its latency."""
        self.requests.labels(path, str(status)).inc()
        self.latency.labels(path).observe(seconds)

    def observe_batch(self, model: str, texts: int, requests: int) -> None:
        """Count one forward pass of `texts` texts from `requests` requests."""
        self.texts.labels(model).inc(texts)
        self.batch_size.labels(model).observe(texts)
        self.batch_requests.labels(model).observe(requests)

    def watch_queue(self, waiting: Callable[[], float], inflight: Callable[[], float]) -> None:
        """Read the queue gauges from the micro-batcher at each scrape: `waiting()` texts queued, `inflight()` texts
        in the pass (computed when asked, so they cannot drift from the batcher's own counts)."""
        self.queue_depth.set_function(waiting)
        self.inflight.set_function(inflight)

    def render(self) -> str:
        """Every metric in Prometheus' text format (`CONTENT_TYPE`)."""
        return generate_latest(self.registry).decode("utf-8")
