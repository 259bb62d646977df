"""Load test of `textlora serve`: 32 concurrent clients for a bounded time, micro-batching on vs off.

    python bench/serve_load.py                       # trains a quick emotion MiniLM run if needed
    python bench/serve_load.py --run runs/emotion-lora --duration 30

Starts the real server on 127.0.0.1 twice (batching on, then --no-batching), drives each for
`--duration` seconds with `--clients` keep-alive connections, one emotion text per request, and
prints one JSON line: requests/s, texts/s, p50/p99 latency (ms) and errors per mode, plus the
texts/s ratio. The client is a minimal HTTP/1.1 keep-alive loop on asyncio streams: on a 2-core
machine a full HTTP client library costs as much CPU per request as the model does, and the client
shares the cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _runs import SHARED, ensure_run

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="run folder to serve (default: train a quick emotion LoRA run)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per mode (at most 60)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--texts-per-request", type=int, default=1)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--threads", type=int, help="the server's torch threads (default: torch's, one per core)")
    args = p.parse_args()
    if not 0 < args.duration <= 60:
        sys.exit(f"--duration must be in (0, 60] seconds, got {args.duration}.")
    run = Path(args.run) if args.run else ensure_run(ROOT / "runs" / "bench" / "emotion-lora", "emotion")
    texts = _texts(400)
    bodies = [json.dumps({"model": "emotion", "texts": texts[i:i + args.texts_per_request]}).encode()
              for i in range(0, len(texts) - args.texts_per_request, args.texts_per_request)]
    result = {"bench": "serve_load", "run": str(run), "clients": args.clients, "duration_s": args.duration,
              "texts_per_request": args.texts_per_request, "cpus": os.cpu_count(), "threads": args.threads,
              "max_wait_ms": args.max_wait_ms, "load_avg_1m_before": round(os.getloadavg()[0], 2)}
    common = ["--threads", str(args.threads)] if args.threads else []
    for mode, flags in (("batching", ["--max-wait-ms", str(args.max_wait_ms)]), ("no_batching", ["--no-batching"])):
        with _server(run, flags + common) as port:
            result[mode] = asyncio.run(_drive(port, bodies, args.clients, args.duration, args.texts_per_request))
    result["texts_per_s_ratio"] = round(result["batching"]["texts_per_s"] / max(result["no_batching"]["texts_per_s"],
                                                                                  1e-9), 2)
    result["load_avg_1m_after"] = round(os.getloadavg()[0], 2)  # other work on the machine skews both modes
    print(json.dumps(result))


def _texts(n: int) -> list[str]:
    with gzip.open(SHARED / "emotion" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line, _ in zip(f, range(n))]


class _server:
    """The real `textlora serve` process on a free loopback port, stopped on exit."""

    def __init__(self, run: Path, flags: list[str]):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "textlora.cli", "serve", f"emotion={run}", "--port", str(self.port), *flags]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> int:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"server exited: {self.proc.stderr.read()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                return self.port
            except OSError:
                time.sleep(0.3)
        self.proc.kill()
        sys.exit("server did not answer /healthz within 120 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def _drive(port: int, bodies: list[bytes], clients: int, duration: float, per_request: int) -> dict:
    await asyncio.gather(*(_client(port, bodies[i::clients], time.perf_counter() + 2.0, [], [0])
                           for i in range(clients)))  # warm-up, not counted
    latencies: list[float] = []
    errors = [0]
    start = time.perf_counter()
    await asyncio.gather(*(_client(port, bodies[i::clients], start + duration, latencies, errors)
                           for i in range(clients)))
    elapsed = time.perf_counter() - start
    lat = sorted(latencies)
    pct = (lambda q: round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 1)) if lat else (lambda q: None)
    return {"requests": len(lat), "errors": errors[0], "requests_per_s": round(len(lat) / elapsed, 1),
            "texts_per_s": round(len(lat) * per_request / elapsed, 1), "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


async def _client(port: int, bodies: list[bytes], deadline: float, latencies: list[float], errors: list[int]) -> None:
    """One keep-alive connection sending requests back to back until `deadline`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while time.perf_counter() < deadline:
            body = bodies[i % len(bodies)]
            i += 1
            t0 = time.perf_counter()
            writer.write(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            status = await _read_response(reader)
            latencies.append(time.perf_counter() - t0)
            errors[0] += status != 200
    except (OSError, asyncio.IncompleteReadError, ValueError):
        errors[0] += 1
    finally:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Status code of one response; reads (and drops) its body by Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (x.partition(":") for x in lines[1:]) if k.lower() == "content-length")
    await reader.readexactly(length)
    return int(lines[0].split()[1])


if __name__ == "__main__":
    main()
