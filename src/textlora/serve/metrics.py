"""Prometheus metrics in the text exposition format, written by hand.

Three metric families are all the server needs (request counts, request latency, batch sizes), so
~70 lines here replace the `prometheus_client` dependency. Every update happens on the event-loop
thread, so no locks are needed. Format: https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import bisect
from collections import defaultdict

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Request latency buckets, seconds."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""Texts-per-forward-pass buckets."""


class Histogram:
    """Cumulative-bucket histogram with one series per label tuple."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]):
        self.name, self.doc, self.labels, self.buckets = name, doc, labels, buckets
        self._counts: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0] * (len(buckets) + 1))
        self._sums: dict[tuple[str, ...], float] = defaultdict(float)

    def observe(self, value: float, *label_values: str) -> None:
        self._counts[label_values][bisect.bisect_left(self.buckets, value)] += 1
        self._sums[label_values] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} histogram"]
        for values, counts in sorted(self._counts.items()):
            base = _labels(self.labels, values)
            total = 0
            for bound, n in zip((*self.buckets, float("inf")), counts):
                total += n
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f"{self.name}_bucket{_labels((*self.labels, 'le'), (*values, le))} {total}")
            lines.append(f"{self.name}_sum{base} {self._sums[values]:.6f}")
            lines.append(f"{self.name}_count{base} {total}")
        return lines


class Counter:
    """Monotonic counter with one series per label tuple."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]):
        self.name, self.doc, self.labels = name, doc, labels
        self._values: dict[tuple[str, ...], float] = defaultdict(float)

    def inc(self, *label_values: str, by: float = 1) -> None:
        self._values[label_values] += by

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} counter"]
        lines += [f"{self.name}{_labels(self.labels, v)} {n:g}" for v, n in sorted(self._values.items())]
        return lines


class ServerMetrics:
    """The server's metric families; `render()` is the body of `GET /metrics`."""

    def __init__(self) -> None:
        self.requests = Counter("textlora_requests_total", "HTTP requests by path and status code.",
                                ("path", "status"))
        self.latency = Histogram("textlora_request_duration_seconds", "HTTP request latency by path.",
                                 ("path",), LATENCY_BUCKETS)
        self.texts = Counter("textlora_texts_total", "Texts classified, by model.", ("model",))
        self.batch_size = Histogram("textlora_batch_size_texts", "Texts per forward pass, by model.",
                                    ("model",), BATCH_BUCKETS)
        self.batch_requests = Histogram("textlora_batch_size_requests", "Requests per forward pass, by model.",
                                        ("model",), BATCH_BUCKETS)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        self.requests.inc(path, str(status))
        self.latency.observe(seconds, path)

    def observe_batch(self, model: str, texts: int, requests: int) -> None:
        self.texts.inc(model, by=texts)
        self.batch_size.observe(texts, model)
        self.batch_requests.observe(requests, model)

    def render(self) -> str:
        families = (self.requests, self.latency, self.texts, self.batch_size, self.batch_requests)
        return "\n".join(line for f in families for line in f.render()) + "\n"


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    escaped = (str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped)) + "}"
