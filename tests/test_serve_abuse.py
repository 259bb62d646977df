"""`textlora serve` under hostile or broken clients: one client must never fail another.

The micro-batcher directly (a failing text, a full queue), the in-process app for what needs a
patched forward pass, and the real server process on loopback for slow and vanishing clients.
"""

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from conftest import make_rows, serve_process, write_jsonl

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

POISON = "poison"
TIMEOUT_S = 1  # the server's body and header timeouts in these tests
HANG_GUARD_S = 30  # only so that a broken server fails the test instead of hanging it


def _fake_infer(model: str, texts: list[str]) -> np.ndarray:
    if any(POISON in t for t in texts):
        raise RuntimeError("index out of range in self")
    return np.array([[float(len(t))] for t in texts])


# --- the micro-batcher ---------------------------------------------------------------------------

def test_batcher_gives_a_failure_only_to_the_request_that_fails():
    from textlora.serve.batching import MicroBatcher

    calls = []

    def infer(model, texts):
        calls.append(len(texts))
        return _fake_infer(model, texts)

    async def run():
        b = MicroBatcher(infer, ["a"], max_batch=64, max_wait=0.2)
        await b.start()
        texts = [["x" * (i + 1), "y"] for i in range(6)] + [["fine", POISON]]
        out = await asyncio.gather(*(b.submit("a", t) for t in texts), return_exceptions=True)
        later = await asyncio.wait_for(b.submit("a", ["zz"]), HANG_GUARD_S)
        await b.stop()
        return out, later

    out, later = asyncio.run(run())
    for i, scores in enumerate(out[:6]):
        assert not isinstance(scores, Exception), scores
        assert scores[:, 0].tolist() == [i + 1, 1]
    assert isinstance(out[6], RuntimeError)
    assert later[:, 0].tolist() == [2]
    assert calls[0] == 14  # one batched pass first, then each request alone


def test_batcher_worker_survives_an_error_outside_the_forward_pass():
    from textlora.serve.batching import MicroBatcher

    failed = []

    def on_batch(model, texts, requests):
        if not failed:
            failed.append(1)
            raise ValueError("metrics broke")

    async def run():
        b = MicroBatcher(_fake_infer, ["a"], max_wait=0.0, on_batch=on_batch)
        await b.start()
        with pytest.raises(ValueError, match="metrics broke"):
            await asyncio.wait_for(b.submit("a", ["first"]), HANG_GUARD_S)
        later = await asyncio.wait_for(b.submit("a", ["second"]), HANG_GUARD_S)
        await b.stop()
        return later

    assert asyncio.run(run())[:, 0].tolist() == [6]


@pytest.mark.parametrize("batching", [True, False])
def test_batcher_refuses_texts_past_max_queue(batching):
    from textlora.serve.batching import MicroBatcher, ServerBusy

    release = threading.Event()

    def slow_infer(model, texts):
        release.wait(HANG_GUARD_S)
        return _fake_infer(model, texts)

    async def run():
        b = MicroBatcher(slow_infer, ["a"], max_wait=0.0, enabled=batching, max_queue=4)
        await b.start()
        first = [asyncio.create_task(b.submit("a", ["ab", "c"])) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert b.queued == 4
        with pytest.raises(ServerBusy, match=r"4 texts are waiting, at most 4 \(--max-queue\)"):
            await b.submit("a", ["d"])
        release.set()
        out = await asyncio.gather(*first)
        queued_after = b.queued
        await b.stop()
        return out, queued_after

    out, queued_after = asyncio.run(run())
    assert [o[:, 0].tolist() for o in out] == [[2, 1], [2, 1]] and queued_after == 0


def test_max_queue_below_max_texts_is_refused():
    from textlora.errors import ConfigError
    from textlora.serve.options import ServeOptions

    with pytest.raises(ConfigError, match=r"max_queue \(8\) must be at least max_texts \(64\)"):
        ServeOptions(max_queue=8)
    with pytest.raises(ConfigError, match="body_timeout_s must be more than 0 seconds, got 0"):
        ServeOptions(body_timeout_s=0)


# --- the app in-process (its forward pass patched) ----------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tiny_models, tmp_path_factory):
    """One tiny LoRA run on the tiny BERT (a second or two)."""
    from conftest import tiny_config

    from textlora.train import train

    root = tmp_path_factory.mktemp("abuse")
    data = root / "data"
    for split, n, seed in (("train", 30, 1), ("validation", 9, 2), ("test", 9, 3)):
        write_jsonl(data / f"{split}.jsonl", make_rows(n, seed=seed))
    train(tiny_config(data, tiny_models["bert"], root / "emotion", "lora", epochs=1), progress=False)
    return root / "emotion"


def _client(run_dir, patch_scores=None, broken_info=False, **options):
    from starlette.testclient import TestClient

    from textlora.serve.app import build_app
    from textlora.serve.options import ServeOptions
    from textlora.serve.registry import Registry, RunSpec

    registry = Registry.load([RunSpec.parse(f"emotion={run_dir}")])
    if patch_scores:
        registry.scores = patch_scores(registry.scores)
    if broken_info:
        registry.runs["emotion"].info = lambda: {}["no such key"]
    app = build_app(registry, ServeOptions(**options))
    return TestClient(app, raise_server_exceptions=False)


def test_a_text_that_breaks_the_forward_pass_fails_only_its_own_request(run_dir):
    def patch(scores):
        return lambda name, texts: _fake_infer(name, texts) if POISON in texts else scores(name, texts)

    bodies = [{"model": "emotion", "texts": [f"good day {i}"]} for i in range(7)]
    bodies.insert(3, {"model": "emotion", "texts": ["love it", POISON]})
    with _client(run_dir, patch, max_wait_ms=300) as client, ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda b: client.post("/v1/classify", json=b), bodies))
        later = client.post("/v1/classify", json=bodies[0])
    poisoned = responses.pop(3)
    assert [r.status_code for r in responses] == [200] * 7
    assert poisoned.status_code == 500 and poisoned.headers["content-type"] == "application/json"
    assert poisoned.json()["detail"].startswith("classifying these texts failed (RuntimeError: index out of range")
    assert later.status_code == 200


def test_an_unexpected_error_is_a_json_500(run_dir):
    with _client(run_dir, broken_info=True) as client:
        r = client.get("/v1/models")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert r.json()["detail"].startswith("internal server error while handling this request")


def test_a_full_queue_answers_503_with_retry_after(run_dir):
    started, release = threading.Event(), threading.Event()

    def patch(scores):
        def slow(name, texts):
            started.set()
            release.wait(HANG_GUARD_S)
            return scores(name, texts)
        return slow

    with _client(run_dir, patch, max_texts=4, max_queue=4) as client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/v1/classify", json={"model": "emotion", "texts": ["a", "b", "c"]})
        assert started.wait(HANG_GUARD_S)
        busy = client.post("/v1/classify", json={"model": "emotion", "texts": ["d", "e"]})
        release.set()
        assert first.result().status_code == 200
        after = client.post("/v1/classify", json={"model": "emotion", "texts": ["d", "e"]})
    assert busy.status_code == 503, busy.text
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["detail"] == ("the server is busy: 3 texts are waiting, at most 4 (--max-queue). "
                                     "Retry in a moment.")
    assert after.status_code == 200


# --- the real server process ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(run_dir):
    """The real server on 127.0.0.1 with 1-second body and header timeouts; yields (host, port)."""
    with serve_process([f"emotion={run_dir}"], "--body-timeout-s", str(TIMEOUT_S),
                       "--header-timeout-s", str(TIMEOUT_S)) as (_, port):
        yield "127.0.0.1", port


def _url(server: tuple[str, int], path: str) -> str:
    return f"http://{server[0]}:{server[1]}{path}"


def _read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout fails the test)."""
    s.settimeout(HANG_GUARD_S)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("sent", [b"", b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Ty"])
def test_slow_headers_are_cut_off(server, sent):
    with socket.create_connection(server, timeout=10) as s:
        s.sendall(sent)
        assert _read_all(s) == b""  # closed by the server, nothing answered


def test_a_keep_alive_connection_with_slow_next_headers_is_cut_off(server):
    with socket.create_connection(server, timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(s).startswith(b"HTTP/1.1 200 ")
        s.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # within uvicorn's 5 s keep-alive, then stalls
        assert _read_all(s) == b""


def test_a_slow_body_gets_408_and_the_connection_closes(server):
    with socket.create_connection(server, timeout=10) as s:
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n" + b'{"model": "emo')
        head, _, body = _read_all(s).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower()
    assert json.loads(body)["detail"] == (f"the request body did not arrive within {TIMEOUT_S} s (--body-timeout-s); "
                                          "14 bytes came. Send the whole body at once.")


def test_an_oversized_body_closes_the_connection(server):
    with socket.create_connection(server, timeout=10) as s:  # declares 99 MB, then keeps sending it slowly
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{")
        assert _read_response(s).startswith(b"HTTP/1.1 413 ")
        assert _closed_while_dribbling(s)


def _read_response(s: socket.socket) -> bytes:
    """One whole response (head and Content-Length body), however the bytes are split."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)^content-length: *(\d+)", head, re.M).group(1))
    while len(body) < length:
        body += s.recv(4096)
    return head + b"\r\n\r\n" + body


def _closed_while_dribbling(s: socket.socket) -> bool:
    """Whether the server closes the connection while the client keeps sending a byte now and then."""
    s.settimeout(0.2)
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        try:
            if s.recv(4096) == b"":
                return True
        except TimeoutError:
            pass
        try:
            s.sendall(b" ")
        except OSError:  # reset by the server
            return True
    return False


def test_a_model_name_past_64_characters_is_a_422(server):
    r = httpx.post(_url(server, "/v1/classify"), json={"model": "m" * 65, "texts": ["hi"]}, timeout=30)
    assert r.status_code == 422
    assert r.json()["detail"] == "model: a run name has at most 64 characters; GET /v1/models lists them"


def test_head_healthz_is_200(server):
    r = httpx.head(_url(server, "/healthz"), timeout=30)
    assert r.status_code == 200 and r.content == b""


def _count(metrics: str, status: str) -> float:
    found = re.findall(rf'^textlora_requests_total\{{path="/v1/classify",status="{status}"\}} (\S+)$', metrics, re.M)
    return float(found[0]) if found else 0.0


def test_a_client_that_goes_away_is_counted_as_499_not_500(server):
    url = _url(server, "/metrics")
    before = httpx.get(url, timeout=30).text
    for _ in range(3):
        with socket.create_connection(server, timeout=10) as s:  # half a body, then gone
            s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    deadline = time.monotonic() + HANG_GUARD_S
    while _count(after := httpx.get(url, timeout=30).text, "499") - _count(before, "499") < 3:
        assert time.monotonic() < deadline, after
        time.sleep(0.1)
    assert _count(after, "500") == _count(before, "500") == 0


def test_a_user_error_from_the_forward_pass_is_a_422(run_dir):
    from textlora.errors import DataError

    def patch(scores):
        def refuse(name, texts):
            raise DataError("text 0 has no tokens; send non-empty text.")
        return refuse

    with _client(run_dir, patch) as client:
        r = client.post("/v1/classify", json={"model": "emotion", "texts": ["hi"]})
    assert r.status_code == 422 and r.json()["detail"] == "text 0 has no tokens; send non-empty text."


def test_request_metrics_answer_json_500_and_count_gone_clients_as_499():
    from textlora.serve.app import RequestMetrics
    from textlora.serve.metrics import ServerMetrics

    async def broken(scope, receive, send):
        raise KeyError("boom")

    async def abandoned(scope, receive, send):  # reads the body, finds the client gone, answers nothing
        assert (await receive())["type"] == "http.disconnect"

    async def call(app):
        sent = []

        async def receive():
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "path": "/v1/classify", "method": "POST", "headers": []}
        with pytest.raises(KeyError) if app is broken else contextlib.nullcontext():
            await RequestMetrics(app, metrics)(scope, receive, send)
        return sent

    metrics = ServerMetrics()
    sent = asyncio.run(call(broken))
    assert sent[0]["status"] == 500 and json.loads(sent[1]["body"])["detail"].startswith("internal server error")
    assert asyncio.run(call(abandoned)) == []
    text = metrics.render()
    assert 'textlora_requests_total{path="/v1/classify",status="500"} 1' in text
    assert 'textlora_requests_total{path="/v1/classify",status="499"} 1' in text
