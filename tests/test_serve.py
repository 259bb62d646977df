"""`textlora serve` end to end: the real server process on loopback, called over HTTP.

Four tiny runs: two LoRA runs and a head-only run on one tiny BERT (served on one shared base),
and a full run on a tiny DistilBERT. Then every route, every 4xx case, concurrent requests
batched into one forward pass, and a schemathesis test against /openapi.json with no 5xx.
"""

import asyncio
import json
import re
import socket

import httpx
import numpy as np
import pytest
from conftest import make_rows, serve_process, write_jsonl

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

LIMITS = {"max_texts": 8, "max_chars": 200, "max_body_bytes": 20_000}
RUNS = {  # name -> (base, method, labels)
    "emotion": ("bert", "lora", ("pos", "neg", "neu")),
    "spam": ("bert", "lora", ("pos", "neg")),
    "topic": ("bert", "head", ("pos", "neg", "neu")),
    "full": ("distilbert", "full", ("pos", "neg")),
}
TEXTS = ["good happy day", "the awful chair", "window", "i hate this so much .", "love it !"]


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory) -> dict:
    """Train the four tiny runs (a few seconds in all)."""
    from conftest import tiny_config

    from textlora.train import train

    root = tmp_path_factory.mktemp("serve")
    out = {}
    for name, (kind, method, labels) in RUNS.items():
        data = root / f"data-{name}"
        for split, n, seed in (("train", 60, 1), ("validation", 15, 2), ("test", 15, 3)):
            write_jsonl(data / f"{split}.jsonl", make_rows(n, seed=seed, labels=labels))
        cfg = tiny_config(data, tiny_models[kind], root / name, method, epochs=1)
        train(cfg, progress=False)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def server(runs):
    """The real server as a subprocess on 127.0.0.1; yields its base URL."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in LIMITS.items()]
    with serve_process([f"{n}={p}" for n, p in runs.items()], "--max-wait-ms", "20", *flags) as (url, _):
        yield url


@pytest.fixture(scope="module")
def expected(runs) -> dict:
    """Scores of each run on TEXTS, from `Predictor` (each run on its own model, LoRA merged)."""
    from textlora.predict import Predictor

    return {name: Predictor.load(path).predict_proba(TEXTS) for name, path in runs.items()}


def _classify(url: str, model: str, texts: list[str]) -> httpx.Response:
    return httpx.post(url + "/v1/classify", json={"model": model, "texts": texts}, timeout=30)


@pytest.mark.parametrize("name", list(RUNS))
def test_classify_matches_each_run_loaded_alone(server, expected, name):
    r = _classify(server, name, TEXTS)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == name and len(body["predictions"]) == len(TEXTS)
    labels = sorted(RUNS[name][2])
    scores = np.array([[p["scores"][label] for label in labels] for p in body["predictions"]])
    np.testing.assert_allclose(scores, expected[name], atol=1e-5)
    for p, row in zip(body["predictions"], expected[name]):
        assert p["label"] == labels[int(row.argmax())] and p["labels"] == [p["label"]]


def test_models_lists_every_run_with_its_base(server):
    r = httpx.get(server + "/v1/models")
    assert r.status_code == 200
    models = {m["name"]: m for m in r.json()["models"]}
    assert sorted(models) == sorted(RUNS)
    for name, (kind, method, labels) in RUNS.items():
        m = models[name]
        assert (m["method"], m["labels"], m["base"]["model_type"]) == (method, sorted(labels), kind)
        assert m["base"]["shared"] is (kind == "bert")  # three runs on one BERT, the full run alone
        assert 0 <= m["metrics"]["test"]["accuracy"] <= 1 and "per_class" not in m["metrics"]["test"]
        assert "path" not in m["base"]  # no file paths go out


def test_healthz_and_openapi_show_the_limits(server):
    assert httpx.get(server + "/healthz").json() == {"status": "ok", "models": 4}
    schema = httpx.get(server + "/openapi.json").json()
    assert {"/v1/classify", "/v1/models", "/healthz", "/metrics"} <= set(schema["paths"])
    texts = schema["components"]["schemas"]["ClassifyRequest"]["properties"]["texts"]
    assert (texts["maxItems"], texts["items"]["maxLength"]) == (LIMITS["max_texts"], LIMITS["max_chars"])


def _post_raw(url: str, content, headers=None) -> httpx.Response:
    return httpx.post(url + "/v1/classify", content=content, timeout=30,
                      headers={"content-type": "application/json", **(headers or {})})


def _chunks(total: int):
    for _ in range(total // 1000):
        yield b" " * 1000


CASES = {  # name -> (request body, status, text expected in the message)
    "unknown model": ({"model": "nope", "texts": ["hi"]}, 404, "this server has ['emotion', 'full', 'spam', 'topic']"),
    "path as model": ({"model": "../../etc/passwd", "texts": ["hi"]}, 404, "unknown model"),
    "too many texts": ({"model": "emotion", "texts": ["hi"] * 9}, 422, "at most 8 texts per request"),
    "text too long": ({"model": "emotion", "texts": ["ok", "x" * 201]}, 422, "texts.1: at most 200 characters"),
    "no texts": ({"model": "emotion", "texts": []}, 422, "texts: give at least one text"),
    "texts not a list": ({"model": "emotion", "texts": "hi"}, 422, "texts: "),
    "text not a string": ({"model": "emotion", "texts": [1]}, 422, "texts.0: "),
    "missing model": ({"texts": ["hi"]}, 422, "model: Field required"),
    "unknown field": ({"model": "emotion", "texts": ["hi"], "path": "/etc"}, 422, "path: Extra inputs"),
    "malformed JSON": (b'{"model": "emotion", "texts": [', 422, "the body is not valid JSON"),
    "not UTF-8": (b'\xff\xfe{"model": 1}', 422, "the body is not valid JSON"),
    "lone surrogate": (b'{"model": "emotion", "texts": ["\\ud800"]}', 422, "texts.0: Input should be a valid string"),
    "body too large": ({"model": "emotion", "texts": ["x" * 150] * 200}, 413, "at most 20000 (--max-body-bytes)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_requests_get_a_4xx_that_says_why(server, case):
    body, status, message = CASES[case]
    r = _post_raw(server, body if isinstance(body, bytes) else json.dumps(body).encode())
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_body_limit_counts_bytes_without_content_length(server):
    r = _post_raw(server, _chunks(30_000))  # a generator body goes out chunked, with no Content-Length
    assert r.status_code == 413 and "--max-body-bytes" in r.json()["detail"]
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:  # declares 99 MB, sends none of it
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 99999999\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 413 ")


def _metric(text: str, name: str, model: str) -> float:
    m = re.search(rf'^{name}{{model="{model}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_concurrent_requests_share_forward_passes_and_get_their_own_rows(server, expected):
    before = httpx.get(server + "/metrics").text

    async def burst():
        async with httpx.AsyncClient(base_url=server, timeout=30) as client:
            jobs = [client.post("/v1/classify", json={"model": m, "texts": [TEXTS[i % 5], TEXTS[(i + 2) % 5]]})
                    for i in range(12) for m in ("emotion", "spam")]
            return await asyncio.gather(*jobs)

    responses = asyncio.run(burst())
    for k, r in enumerate(responses):
        i, model = divmod(k, 2)
        assert r.status_code == 200
        labels = sorted(RUNS[("emotion", "spam")[model]][2])
        got = [[p["scores"][x] for x in labels] for p in r.json()["predictions"]]
        want = expected[("emotion", "spam")[model]][[i % 5, (i + 2) % 5]]
        np.testing.assert_allclose(got, want, atol=1e-5)
    after = httpx.get(server + "/metrics").text
    for model in ("emotion", "spam"):
        passes = (_metric(after, "textlora_batch_size_requests_count", model)
                  - _metric(before, "textlora_batch_size_requests_count", model))
        assert 1 <= passes < 12  # 12 concurrent requests per model, fewer forward passes
        texts = _metric(after, "textlora_texts_total", model) - _metric(before, "textlora_texts_total", model)
        assert texts == 24


def test_metrics_are_prometheus_text(server):
    _classify(server, "nope", ["hi"])
    r = httpx.get(server + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert 'textlora_requests_total{path="/v1/classify",status="404"}' in text
    assert "# TYPE textlora_request_duration_seconds histogram" in text
    from prometheus_client.parser import text_string_to_metric_families

    buckets = [s for f in text_string_to_metric_families(text) if f.name == "textlora_request_duration_seconds"
               for s in f.samples if s.name.endswith("_bucket")]
    assert {"path": "/v1/classify", "le": "+Inf"} in [s.labels for s in buckets]
    assert "# TYPE textlora_batch_size_texts histogram" in text


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(server + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_schema_driven_requests_never_get_a_5xx(case):
    response = case.call(timeout=30)
    assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
    case.validate_response(response)


def test_batcher_groups_concurrent_requests_and_splits_rows():
    from textlora.serve.batching import MicroBatcher

    calls = []

    def infer(model, texts):
        calls.append((model, len(texts)))
        return np.array([[float(t)] for t in texts])

    async def run(enabled):
        calls.clear()
        b = MicroBatcher(infer, ["a", "b"], max_batch=8, max_wait=0.05, enabled=enabled)
        await b.start()
        jobs = [b.submit(m, [str(i), str(i + 100)]) for i in range(6) for m in ("a", "b")]
        out = await asyncio.gather(*jobs)
        await b.stop()
        return out

    for enabled in (True, False):
        out = asyncio.run(run(enabled))
        assert [o[:, 0].tolist() for o in out] == [[i, i + 100] for i in range(6) for _ in "ab"]
        assert sum(n for _, n in calls) == 24
        assert (len(calls) < 12 and max(n for _, n in calls) <= 8) if enabled else len(calls) == 12


def test_tight_batches_bound_padding():
    from textlora.serve.registry import tight_batches

    lengths = [64, 10, 12, 60, 11, 9, 30, 8]
    batches = tight_batches(lengths, max_rows=3)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert batches[0] == [0, 3, 6] and all(len(b) <= 3 for b in batches)
    for b in batches:
        assert sum(lengths[i] for i in b) >= 0.75 * len(b) * max(lengths[i] for i in b) or len(b) == 1


def test_bf16_registry_scores_in_bfloat16_close_to_fp32(runs, expected, monkeypatch):
    import torch

    from textlora.errors import ConfigError
    from textlora.serve.options import ServeOptions
    from textlora.serve.registry import Registry, RunSpec

    monkeypatch.setattr("textlora.model.precision.native_bf16", lambda device: True)
    reg = Registry.load([RunSpec.parse(f"{n}={p}") for n, p in runs.items()], precision="bf16")
    dtypes = set()
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: dtypes.add(output.dtype) if isinstance(module, torch.nn.Linear) else None)
    try:
        scores = {name: reg.scores(name, TEXTS) for name in runs}
    finally:
        handle.remove()
    assert dtypes == {torch.bfloat16}
    for name in runs:
        assert np.allclose(scores[name], expected[name], atol=0.02)
    with pytest.raises(ConfigError, match=r"precision must be one of \['auto', 'fp32', 'bf16', 'fp16'\], got 'fp8'"):
        ServeOptions(precision="fp8")


def test_each_served_run_is_a_predictor_and_runs_on_one_base_share_its_model(runs, expected):
    from textlora.predict import Predictor
    from textlora.serve.registry import Registry, RunSpec, tight_batches

    reg = Registry.load([RunSpec.parse(f"{n}={p}") for n, p in runs.items()])
    predictors = {name: reg.runs[name].predictor for name in runs}
    assert all(isinstance(p, Predictor) and p.batching is tight_batches for p in predictors.values())
    assert predictors["emotion"].model is predictors["spam"].model is predictors["topic"].model  # one shared base
    assert predictors["full"].model is not predictors["emotion"].model
    for name in runs:  # the adapter and head of each run are selected per call, in any order
        assert np.allclose(reg.scores(name, TEXTS), expected[name], atol=1e-5)
        assert reg.runs[name].labels == sorted(RUNS[name][2]) and reg.runs[name].info()["base"]["shared"] == (
            name != "full")
