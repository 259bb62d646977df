"""Where a training run's peak memory is: resident set size sampled every 20 ms through a `textlora train`, split
into evaluation passes and the rest (loading and training steps).

    python bench/memory_phases.py --config configs/s4_emotion_qlora.yaml --out /tmp/run --overwrite train.epochs=1
    python bench/memory_phases.py --data ../shared/datasets/emotion --method lora --out /tmp/run --overwrite \
        --epochs 1 --max-train-samples 2000 train.eval_base=false

Every argument goes to `textlora train` in this process; a thread reads VmRSS from /proc/self/status (Linux), and
textlora's evaluation functions are wrapped to record when each pass starts and ends. Prints one JSON line: the
peak of each evaluation pass (untrained base, per-epoch validation, final validation and test), the peak outside
them, the overall peak, and the peak in each 20-second window (to see the resident set grow).
"""

from __future__ import annotations

import json
import sys
import threading
import time


def main() -> None:
    samples: list[tuple[float, int]] = []

    from textlora.memory import rss_mb

    def sample() -> None:
        while True:
            samples.append((time.time(), int(rss_mb())))
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    import textlora.train as T
    from textlora.cli import main as cli

    passes: list[tuple[str, float, float]] = []

    def timed(name: str, fn):
        def wrapper(*args, **kwargs):
            start = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                passes.append((name, start, time.time()))
        return wrapper

    T._logits = timed("evaluation", T._logits)  # per-epoch validation, final validation and test
    T._evaluate = timed("untrained base evaluation", T._evaluate)
    t0 = time.time()
    sys.argv = ["textlora", "train", *sys.argv[1:]]
    try:
        cli()
    except SystemExit as e:  # the CLI exits with its status; a failed run stops the bench too
        if e.code not in (0, None):
            raise
    time.sleep(0.1)

    def peak(a: float, b: float) -> int | None:
        inside = [mb for t, mb in samples if a <= t <= b]
        return max(inside) if inside else None

    phases: dict[str, list[int | None]] = {}
    for name, a, b in passes:
        phases.setdefault(name, []).append(peak(a, b))
    outside = [mb for t, mb in samples if not any(a <= t <= b for _, a, b in passes)]
    windows: dict[int, int] = {}
    for t, mb in samples:
        key = int((t - t0) // 20) * 20
        windows[key] = max(windows.get(key, 0), mb)
    print(json.dumps({"bench": "memory_phases", "args": sys.argv[2:], "peak_rss_mb_by_phase": phases,
                      "peak_rss_mb_outside_evaluation": max(outside), "peak_rss_mb": max(mb for _, mb in samples),
                      "peak_rss_mb_by_20s_window": windows}))


if __name__ == "__main__":
    main()
