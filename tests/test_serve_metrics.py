"""`GET /metrics` through prometheus_client: the scrape parses as Prometheus text, counters and histograms move with
requests, each app has its own registry, and the queue and in-flight gauges show a forward pass that is running.

The app runs in-process over a stand-in registry (fixed scores, a forward pass that can be held), so the metrics
are tested without training a model; test_serve.py scrapes the real server."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

HANG_GUARD_S = 30  # only so that a broken server fails the test instead of hanging it
LABELS = ["neg", "pos"]


def _registry(infer=None):
    """What `build_app` reads of a `Registry`: one run 'm' with two labels, scores from `infer`."""
    from textlora.heads import SingleLabel

    run = SimpleNamespace(labels=LABELS, thresholds=None, kind=SingleLabel(LABELS),
                          info=lambda: {"name": "m", "method": "lora", "base": {}, "labels": LABELS,
                                        "multi_label": False, "metrics": {}})
    default = lambda name, texts: np.tile([0.25, 0.75], (len(texts), 1))  # noqa: E731
    return SimpleNamespace(runs={"m": run}, names=["m"], scores=infer or default)


def _client(infer=None, **options):
    from starlette.testclient import TestClient

    from textlora.serve.app import build_app
    from textlora.serve.options import ServeOptions

    return TestClient(build_app(_registry(infer), ServeOptions(**options)))


def _scrape(client) -> dict:
    """Every sample of GET /metrics, parsed: {(name, sorted label items): value}."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def _families(client) -> dict:
    return {f.name: f.type for f in text_string_to_metric_families(client.get("/metrics").text)}


def _get(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_and_histograms_move_with_requests():
    with _client() as client:
        before = _scrape(client)
        for n in (1, 3, 2):
            assert client.post("/v1/classify", json={"model": "m", "texts": ["x"] * n}).status_code == 200
        assert client.post("/v1/classify", json={"model": "nope", "texts": ["x"]}).status_code == 404
        after = _scrape(client)
        families = _families(client)

    def moved(name, **labels):
        return _get(after, name, **labels) - _get(before, name, **labels)

    assert moved("textlora_requests_total", path="/v1/classify", status="200") == 3
    assert moved("textlora_requests_total", path="/v1/classify", status="404") == 1
    assert moved("textlora_request_duration_seconds_count", path="/v1/classify") == 4
    assert moved("textlora_request_duration_seconds_bucket", path="/v1/classify", le="+Inf") == 4
    assert moved("textlora_request_duration_seconds_sum", path="/v1/classify") > 0
    assert moved("textlora_texts_total", model="m") == 6
    passes = moved("textlora_batch_size_texts_count", model="m")
    assert 1 <= passes <= 3 and moved("textlora_batch_size_texts_sum", model="m") == 6
    assert moved("textlora_batch_size_requests_sum", model="m") == 3
    assert _get(after, "textlora_requests_total", path="/metrics", status="200") >= 1  # the scrape before
    assert {"textlora_requests": "counter", "textlora_request_duration_seconds": "histogram",
            "textlora_texts": "counter", "textlora_batch_size_texts": "histogram",
            "textlora_batch_size_requests": "histogram", "textlora_requests_in_progress": "gauge",
            "textlora_queue_depth_texts": "gauge", "textlora_inflight_texts": "gauge"}.items() <= families.items()
    # idle: nothing queued or in a pass; the one request in progress is this scrape
    assert _get(after, "textlora_queue_depth_texts") == 0 and _get(after, "textlora_inflight_texts") == 0
    assert _get(after, "textlora_requests_in_progress") == 1


def test_each_app_counts_in_its_own_registry():
    with _client() as one, _client() as two:
        one.post("/v1/classify", json={"model": "m", "texts": ["a", "b"]})
        assert _get(_scrape(one), "textlora_texts_total", model="m") == 2
        assert _get(_scrape(two), "textlora_texts_total", model="m") == 0


@pytest.mark.parametrize("batching", [True, False])
def test_gauges_show_a_pass_in_flight_and_the_texts_behind_it(batching):
    started, release = threading.Event(), threading.Event()

    def slow(name, texts):
        started.set()
        assert release.wait(HANG_GUARD_S)
        return np.tile([0.5, 0.5], (len(texts), 1))

    with _client(slow, max_wait_ms=0, batching=batching) as client, ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.post, "/v1/classify", json={"model": "m", "texts": ["a", "b", "c"]})
        assert started.wait(HANG_GUARD_S)
        second = pool.submit(client.post, "/v1/classify", json={"model": "m", "texts": ["d", "e"]})
        try:
            deadline = time.monotonic() + HANG_GUARD_S
            while _get(held := _scrape(client), "textlora_queue_depth_texts") != 2:  # the second waits behind the pass
                assert time.monotonic() < deadline and not second.done(), held
                time.sleep(0.01)
        finally:
            release.set()
        assert first.result(HANG_GUARD_S).status_code == 200 and second.result(HANG_GUARD_S).status_code == 200
        done = _scrape(client)
    assert _get(held, "textlora_inflight_texts") == 3
    assert _get(held, "textlora_queue_depth_texts") == 2
    assert _get(held, "textlora_requests_in_progress") == 3  # both classify requests and the scrape
    assert _get(done, "textlora_inflight_texts") == 0 and _get(done, "textlora_queue_depth_texts") == 0
    assert _get(done, "textlora_texts_total", model="m") == 5
