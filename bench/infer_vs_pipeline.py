"""Inference speed: textlora's Predictor vs `transformers.pipeline("text-classification")`, same weights.

    python bench/infer_vs_pipeline.py --run runs/emotion-lora
    python bench/infer_vs_pipeline.py            # trains a quick run first (500 rows, 1 epoch)

Both classify the 2000 emotion test texts with the same merged weights. textlora: length-sorted
batches of 32 (Predictor's default) with dynamic padding, the last layer for [CLS] only; the pipeline at each batch size of
`--pipeline-batch-size` (default 1, 16 and 64), and the speed-up is quoted against its fastest.
Also textlora with dynamic int8 quantization (per-channel weights) and with bf16 autocast (fast only on
CPUs with AMX or AVX512-BF16: `cpu_native_bf16` says whether this one has them). Prints one JSON line:
examples/s of each, the speed-up, label agreement with the pipeline, and test accuracy of each.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "emotion")


def _quick_run(data: str) -> str:
    from textlora.config import RunConfig
    from textlora.train import train

    out = tempfile.mkdtemp() + "/run"
    train(RunConfig.from_dict({"data": {"path": data, "max_train_samples": 500}, "train": {"epochs": 1},
                               "out": out}), progress=False)
    return out


def _timed(fn, texts):
    fn(texts[:64])  # warm-up
    t = time.perf_counter()
    out = fn(texts)
    return out, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run")
    p.add_argument("--data", default=SHARED)
    p.add_argument("--pipeline-batch-size", type=int, nargs="+", default=[1, 16, 64])
    args = p.parse_args()

    import numpy as np
    from transformers import pipeline

    from textlora.config import DataConfig
    from textlora.data.splits import load_dataset
    from textlora.model.precision import native_bf16
    from textlora.predict import Predictor

    run = args.run or _quick_run(args.data)
    test = load_dataset(DataConfig(path=args.data)).test
    texts, gold = test.texts, test.labels
    clf = Predictor.load(run)
    ours, t_ours = _timed(clf.predict, texts)
    pipe_rates, best = {}, None
    for bs in args.pipeline_batch_size:
        pipe = pipeline("text-classification", model=clf.model, tokenizer=clf.tokenizer, device=-1,
                        batch_size=bs, truncation=True, max_length=clf.config.model.max_length)
        labels, seconds = _timed(lambda xs, pipe=pipe: [r["label"] for r in pipe(list(xs))], texts)
        pipe_rates[bs] = round(len(texts) / seconds, 1)
        if best is None or seconds < best[1]:
            best = labels, seconds, bs
    theirs, t_pipe, best_bs = best
    q = Predictor.load(run, int8=True)
    ours8, t_int8 = _timed(q.predict, texts)
    ours16, t_bf16 = _timed(Predictor.load(run, precision="bf16").predict, texts)
    n = len(texts)

    def acc(pred):
        return round(float(np.mean([a == b for a, b in zip(pred, gold)])), 4)

    print(json.dumps({
        "bench": "infer_vs_pipeline", "texts": n, "run": run,
        "pipeline_examples_per_s_by_batch_size": pipe_rates, "pipeline_best_batch_size": best_bs,
        "pipeline_examples_per_s": round(n / t_pipe, 1), "textlora_examples_per_s": round(n / t_ours, 1),
        "textlora_int8_examples_per_s": round(n / t_int8, 1), "textlora_bf16_examples_per_s": round(n / t_bf16, 1),
        "speedup": round(t_pipe / t_ours, 2), "speedup_int8": round(t_pipe / t_int8, 2),
        "speedup_bf16": round(t_pipe / t_bf16, 2),
        "agreement_fp32": round(float(np.mean([a == b for a, b in zip(ours, theirs)])), 4),
        "agreement_int8": round(float(np.mean([a == b for a, b in zip(ours8, theirs)])), 4),
        "agreement_bf16": round(float(np.mean([a == b for a, b in zip(ours16, theirs)])), 4),
        "accuracy_pipeline": acc(theirs), "accuracy_textlora": acc(ours), "accuracy_textlora_int8": acc(ours8),
        "accuracy_textlora_bf16": acc(ours16), "cpu_native_bf16": native_bf16(),
    }))


if __name__ == "__main__":
    main()
