"""Hostile clients against `textlora serve`: normal traffic must keep getting 200s while others misbehave.

    python bench/serve_abuse.py                      # a tiny random BERT run, built in a temp folder (seconds)
    python bench/serve_abuse.py --run runs/emotion-lora --duration 20

Starts the real server on 127.0.0.1 with short body and header timeouts, then for `--duration` seconds
runs, side by side: `--clients` normal keep-alive clients (valid requests, 1-2 texts); `--slow` sockets
dribbling their headers and as many dribbling a body one byte at a time; oversized bodies (declared and
chunked); and poisoned requests (invalid JSON, huge texts, wrong fields, unknown or overlong model names,
and, on the tiny run, a text longer than the model's position table, which makes the forward pass
raise). At the end the slow sockets stop sending and get the timeouts to be closed. Prints one JSON line:
normal requests answered, their errors (goal 0), their p99 latency, the abuse answers by status, the
server's peak RSS (VmHWM) and the slow sockets the server left open. Everything is bounded: the whole
run stops within 60 s, and every loop by a count as well as the deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 2.0
"""The server's --body-timeout-s and --header-timeout-s here (short, so the run stays short)."""
MAX_REQUESTS = 20_000
"""Most requests any one loop sends, whatever the duration."""
NORMAL = ["i feel wonderful today", "this makes me so angry", "good happy day", "the awful chair", "window"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="run folder to serve (default: a tiny random BERT run in a temp folder)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of mixed traffic (at most 30)")
    p.add_argument("--clients", type=int, default=4, help="normal keep-alive clients")
    p.add_argument("--slow", type=int, default=100, help="sockets dribbling headers (and as many dribbling bodies)")
    args = p.parse_args()
    if not 0 < args.duration <= 30:
        sys.exit(f"--duration must be in (0, 30] seconds, got {args.duration}.")
    if not 0 <= args.slow <= 400:
        sys.exit(f"--slow must be in 0..400 sockets, got {args.slow}.")
    stop_at = time.monotonic() + 60
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine slows the normal traffic too
    with tempfile.TemporaryDirectory(prefix="textlora-abuse-") as tmp:
        run = Path(args.run) if args.run else _tiny_run(Path(tmp))
        poison = None  # no text fails a forward pass since max_length is checked against the positions (the tests
        # cover a failing forward with a patched model: tests/test_serve_abuse.py)
        with _Server(run, stop_at) as server:
            args.duration = min(args.duration, stop_at - time.monotonic() - TIMEOUT_S - 8)  # the 60 s bound
            if args.duration <= 0:
                sys.exit("no time left for traffic within the 60 s bound (training or start-up took it)")
            result = asyncio.run(_abuse(server.port, args, poison))
            result["server_peak_rss_mb"] = server.peak_rss_mb()
            result["server_statuses"] = _statuses(server.port)
    result = {"bench": "serve_abuse", "run": str(args.run or "tiny random BERT"), "duration_s": round(args.duration, 1),
              "timeouts_s": TIMEOUT_S, "cpus": os.cpu_count(), "load_avg_1m_before": load_before, **result}
    print(json.dumps(result))


def _tiny_run(root: Path) -> Path:
    """A LoRA run on a tiny random BERT (64 positions), as tests/conftest.py builds."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_rows, make_tiny_model, write_jsonl

    from textlora.config import RunConfig
    from textlora.train import train

    model = make_tiny_model("bert", root / "bert")
    for split, n, seed in (("train", 30, 1), ("validation", 9, 2), ("test", 9, 3)):
        write_jsonl(root / "data" / f"{split}.jsonl", make_rows(n, seed=seed))
    cfg = RunConfig.from_dict({"data": {"path": str(root / "data")},
                               "model": {"name": str(model), "method": "lora", "max_length": 64},
                               "lora": {"r": 4, "alpha": 8}, "out": str(root / "run"),
                               "train": {"epochs": 1, "batch_size": 8, "lr": 1e-2, "eval_base": False}})
    train(cfg, progress=False)
    return root / "run"


class _Server:
    """The real `textlora serve` process on a free loopback port, stopped on exit."""

    def __init__(self, run: Path, stop_at: float):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "textlora.cli", "serve", f"m={run}", "--host", "127.0.0.1",
               "--port", str(self.port), "--max-texts", "8", "--max-body-bytes", "200000",
               "--body-timeout-s", str(TIMEOUT_S), "--header-timeout-s", str(TIMEOUT_S)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        self.stop_at = stop_at

    def __enter__(self) -> _Server:
        deadline = min(time.monotonic() + 30, self.stop_at)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"server exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                return self
            except OSError:
                time.sleep(0.3)
        self.proc.kill()
        sys.exit("server did not answer /healthz within 30 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        return round(kb / 1024, 1)


async def _abuse(port: int, args: argparse.Namespace, poison: str | None) -> dict:
    end = time.monotonic() + args.duration
    latencies: list[float] = []
    normal_errors = collections.Counter()
    abuse = collections.Counter()
    slow = {"opened": 0, "closed_by_server": 0, "left_open": 0}
    jobs = [_normal(port, end, i, latencies, normal_errors) for i in range(args.clients)]
    jobs += [_slow(port, end, kind, slow) for kind in ("headers", "body") for _ in range(args.slow)]
    jobs += [_poisoned(port, end, poison, abuse), _oversized(port, end, abuse)]
    await asyncio.gather(*jobs)
    lat = sorted(latencies)
    return {"normal_requests": len(lat), "normal_errors": sum(normal_errors.values()),
            "normal_error_kinds": dict(normal_errors),
            "normal_p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1) if lat else None,
            "abuse_answers": dict(sorted(abuse.items())), "slow_sockets": slow}


async def _request(reader, writer, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    writer.write(head + body)
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (x.partition(":") for x in lines[1:]) if k.lower() == "content-length")
    return int(lines[0].split()[1]), await reader.readexactly(length)


def _post(body: bytes, path: str = "/v1/classify") -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (path.encode(), len(body)))


async def _normal(port: int, end: float, i: int, latencies: list[float], errors: collections.Counter) -> None:
    """A keep-alive client sending valid requests back to back; anything but a 200 is an error."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for k in range(MAX_REQUESTS):
            if time.monotonic() >= end:
                break
            body = json.dumps({"model": "m", "texts": NORMAL[(i + k) % 5:(i + k) % 5 + 1 + k % 2]}).encode()
            t0 = time.perf_counter()
            try:
                status, _ = await asyncio.wait_for(_request(reader, writer, _post(body), body), 30)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
                errors[type(e).__name__] += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors[str(status)] += 1
    finally:
        writer.close()


async def _slow(port: int, end: float, kind: str, counts: dict) -> None:
    """Reconnect and dribble one byte per 0.5 s until `end`; then stop sending and see whether the server
    closes the socket within the timeouts."""
    head = b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    dribble = head + b"X-Slow: " + b"y" * 1000  # never ends its headers
    for _ in range(100):
        if time.monotonic() >= end:
            return
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        counts["opened"] += 1
        if kind == "body":  # ~100 KB now, then a byte at a time: the server buffers what came
            writer.write(head + b'Content-Length: 199999\r\n\r\n{"model": "m", "texts": ["' + b"x" * 100_000)
        closed = False
        for i in range(1000):
            if time.monotonic() >= end:
                break
            writer.write(dribble[i:i + 1] if kind == "headers" else b"x")
            closed = await _closed_within(reader, 0.5)
            if closed:
                break
        if not closed:  # the end: stop sending, give the server its timeouts
            closed = await _closed_within(reader, TIMEOUT_S + 2)
            counts["closed_by_server" if closed else "left_open"] += 1
            writer.close()
            return
        counts["closed_by_server"] += 1
        writer.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (whatever it answers first)."""
    async def drain() -> None:
        while await reader.read(65536):
            pass

    try:
        await asyncio.wait_for(drain(), seconds)
        return True
    except asyncio.TimeoutError:  # not the builtin before Python 3.11
        return False
    except OSError:  # reset
        return True


POISONED = {  # name -> body; each must get a JSON 4xx (or, for the failing forward, a JSON 500)
    "invalid JSON": b'{"model": "m", "texts": [',
    "not UTF-8": b'\xff\xfe{"model": 1}',
    "huge text": json.dumps({"model": "m", "texts": ["x" * 50_000]}).encode(),
    "wrong field": json.dumps({"model": "m", "text": "hi"}).encode(),
    "extra field": json.dumps({"model": "m", "texts": ["hi"], "path": "/etc/passwd"}).encode(),
    "unknown model": json.dumps({"model": "nope", "texts": ["hi"]}).encode(),
    "long model": json.dumps({"model": "m" * 10_000, "texts": ["hi"]}).encode(),
    "too many texts": json.dumps({"model": "m", "texts": ["hi"] * 100}).encode(),
}


async def _poisoned(port: int, end: float, poison: str | None, answers: collections.Counter) -> None:
    """Bad requests in a loop; counts `kind status` (and `kind plain-text` for a non-JSON answer)."""
    cases = dict(POISONED)
    if poison:
        cases["failing forward"] = json.dumps({"model": "m", "texts": [poison]}).encode()
    for k in range(MAX_REQUESTS):
        if time.monotonic() >= end:
            return
        name, body = list(cases.items())[k % len(cases)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            status, text = await asyncio.wait_for(_request(reader, writer, _post(body), body), 30)
            json.loads(text)["detail"]  # noqa: B018 - a JSON error body, or this raises
            answers[f"{name} {status}"] += 1
        except (ValueError, KeyError, TypeError):
            answers[f"{name} not JSON"] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            answers[f"{name} {type(e).__name__}"] += 1
        finally:
            writer.close()
        await asyncio.sleep(0.02)


async def _oversized(port: int, end: float, answers: collections.Counter) -> None:
    """Bodies over --max-body-bytes: one declared 10 MB, one sent chunked without Content-Length."""
    for k in range(MAX_REQUESTS):
        if time.monotonic() >= end:
            return
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            if k % 2:
                head = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
                status, _ = await asyncio.wait_for(_request(reader, writer, head, b"{"), 30)
            else:
                chunk = b"%x\r\n%s\r\n" % (100_000, b" " * 100_000)
                head = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                status, _ = await asyncio.wait_for(_request(reader, writer, head, chunk * 3), 30)
            answers[f"oversized {status}"] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
            answers[f"oversized {type(e).__name__}"] += 1
        finally:
            writer.close()
        await asyncio.sleep(0.05)


def _statuses(port: int) -> dict[str, int]:
    """/v1/classify requests by status, from the server's own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    prefix = 'textlora_requests_total{path="/v1/classify",status="'
    return {line[len(prefix):].split('"')[0]: int(float(line.split()[-1]))
            for line in text.splitlines() if line.startswith(prefix)}


if __name__ == "__main__":
    main()
