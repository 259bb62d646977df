"""Inference speed: textlora's Predictor vs `transformers.pipeline("text-classification")`, same weights.

    python bench/infer_vs_pipeline.py --run runs/emotion-lora
    python bench/infer_vs_pipeline.py            # trains a quick run first (500 rows, 1 epoch)

Both classify the 2000 emotion test texts with the same merged weights. textlora: length-sorted
batches of 32 (Predictor's default) with dynamic padding, the last layer for [CLS] only; the pipeline at each batch size of
`--pipeline-batch-size` (default 1, 16 and 64), and the speed-up is quoted against its fastest.
Also textlora with dynamic int8 quantization (per-channel weights) and with bf16 autocast (fast only on
CPUs with AMX or AVX512-BF16: `cpu_native_bf16` says whether this one has them). On a CPU, also ONNX Runtime
(`--runtime onnx`): the fp32 and the int8 ONNX export of the same run (exported once into the run folder; the
export's seconds are reported apart), with the largest logit difference of fp32 ONNX from PyTorch fp32 and the
label agreement of both with PyTorch fp32 and with the pipeline. Prints one JSON line: examples/s of each, the
speed-up, label agreement with the pipeline, and test accuracy of each.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "emotion")


def _quick_run(data: str, model: str, device: str) -> str:
    from textlora.config import RunConfig
    from textlora.train import train

    out = tempfile.mkdtemp() + "/run"
    train(RunConfig.from_dict({"data": {"path": data, "max_train_samples": 500}, "model": {"name": model},
                               "train": {"epochs": 1, "device": device}, "out": out}), progress=False)
    return out


def _timed(fn, texts, device="cpu"):
    fn(texts[:64])  # warm-up
    _sync(device)
    t = time.perf_counter()
    out = fn(texts)
    _sync(device)
    return out, time.perf_counter() - t


def _sync(device: str) -> None:
    if device != "cpu":
        import torch

        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run")
    p.add_argument("--data", default=SHARED)
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2", help="base of the quick run")
    p.add_argument("--device", default="cpu", help="cpu or cuda: textlora and the pipeline on that device")
    p.add_argument("--pipeline-batch-size", type=int, nargs="+", default=None,
                   help="default: 1, 16, 64 on a CPU; 1, 64, 256 on a GPU")
    p.add_argument("--max-texts", type=int, help="classify only the first N test texts (a smoke check)")
    args = p.parse_args()
    gpu = args.device != "cpu"
    args.pipeline_batch_size = args.pipeline_batch_size or ([1, 64, 256] if gpu else [1, 16, 64])

    import numpy as np
    from transformers import pipeline

    from textlora.config import DataConfig
    from textlora.data.splits import load_dataset
    from textlora.model.precision import native_bf16
    from textlora.predict import Predictor

    run = args.run or _quick_run(args.data, args.model, args.device)
    test = load_dataset(DataConfig(path=args.data)).test
    texts, gold = test.texts[:args.max_texts], test.labels[:args.max_texts]
    clf = Predictor.load(run, device=args.device)
    ours, t_ours = _timed(clf.predict, texts, args.device)
    pipe_rates, best = {}, None
    for bs in args.pipeline_batch_size:
        pipe = pipeline("text-classification", model=clf.model, tokenizer=clf.tokenizer, device=clf.model.device,
                        batch_size=bs, truncation=True, max_length=clf.config.model.max_length)
        labels, seconds = _timed(lambda xs, pipe=pipe: [r["label"] for r in pipe(list(xs))], texts, args.device)
        pipe_rates[bs] = round(len(texts) / seconds, 1)
        if best is None or seconds < best[1]:
            best = labels, seconds, bs
    theirs, t_pipe, best_bs = best
    if gpu:  # int8 is PyTorch's CPU quantization; a GPU's second fast path is fp16
        ours8, t_int8 = _timed(Predictor.load(run, precision="fp16", device=args.device).predict, texts, args.device)
    else:
        ours8, t_int8 = _timed(Predictor.load(run, int8=True, device="cpu").predict, texts)
    ours16, t_bf16 = _timed(Predictor.load(run, precision="bf16", device=args.device).predict, texts, args.device)
    n = len(texts)
    second = "fp16" if gpu else "int8"
    onnx = {} if gpu else _onnx_rows(run, texts, ours, theirs, gold, clf.logits(texts))

    def acc(pred):
        return round(float(np.mean([a == b for a, b in zip(pred, gold)])), 4)

    print(json.dumps({
        "bench": "infer_vs_pipeline", "texts": n, "run": run,
        "pipeline_examples_per_s_by_batch_size": pipe_rates, "pipeline_best_batch_size": best_bs,
        "pipeline_examples_per_s": round(n / t_pipe, 1), "textlora_examples_per_s": round(n / t_ours, 1),
        f"textlora_{second}_examples_per_s": round(n / t_int8, 1), "textlora_bf16_examples_per_s": round(n / t_bf16, 1),
        "speedup": round(t_pipe / t_ours, 2), f"speedup_{second}": round(t_pipe / t_int8, 2),
        "speedup_bf16": round(t_pipe / t_bf16, 2),
        "agreement_fp32": round(float(np.mean([a == b for a, b in zip(ours, theirs)])), 4),
        f"agreement_{second}": round(float(np.mean([a == b for a, b in zip(ours8, theirs)])), 4),
        "agreement_bf16": round(float(np.mean([a == b for a, b in zip(ours16, theirs)])), 4),
        "accuracy_pipeline": acc(theirs), "accuracy_textlora": acc(ours), f"accuracy_textlora_{second}": acc(ours8),
        "accuracy_textlora_bf16": acc(ours16), "cpu_native_bf16": native_bf16(), "device": args.device, **onnx,
    }))


def _onnx_rows(run: str, texts: list[str], torch_fp32: list, pipe: list, gold: list, logits) -> dict:
    """ONNX Runtime fp32 and int8 on the run: speed, agreement with PyTorch fp32 and the pipeline, accuracy."""
    import numpy as np

    from textlora.predict import Predictor

    out: dict = {}
    for name, int8 in (("onnx_fp32", False), ("onnx_int8", True)):
        t = time.perf_counter()
        clf = Predictor.load(run, runtime="onnx", int8=int8)  # exports on the first load, then reads the cache
        out[f"{name}_load_s"] = round(time.perf_counter() - t, 1)
        labels, seconds = _timed(clf.predict, texts)
        out[f"textlora_{name}_examples_per_s"] = round(len(texts) / seconds, 1)
        out[f"agreement_{name}_vs_torch_fp32"] = round(float(np.mean([a == b for a, b in zip(labels, torch_fp32)])), 4)
        out[f"agreement_{name}_vs_pipeline"] = round(float(np.mean([a == b for a, b in zip(labels, pipe)])), 4)
        out[f"accuracy_textlora_{name}"] = round(float(np.mean([a == b for a, b in zip(labels, gold)])), 4)
        out[f"{name}_max_abs_logit_diff_vs_torch_fp32"] = float(np.abs(clf.logits(texts) - logits).max())
    return out


if __name__ == "__main__":
    main()
