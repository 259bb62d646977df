"""Long documents: `model.long_text=windows` against truncation, same data, seed and recipe.

    python bench/long_text.py                                  # IMDb-1000 (the S3 config), 3 variants
    python bench/long_text.py --variants windows-128 --max-train-samples 5000
    python bench/long_text.py --config configs/s3_imdb_full.yaml --epochs 1 --predict-rows 2000 \
        --variants windows-128x4 --set lora.top_layers=1 train.eval_base=false       # full IMDb, one variant

Each variant trains the S3 recipe (configs/s3_imdb_1000.yaml: LoRA r=16, 5 epochs, batch 16, lr 1e-3) with its own
`model.*` settings and prints one JSON line: test accuracy, tokens fed per test document (mean, special tokens
included), windows per document, training and test-prediction seconds (wall and CPU: with `OMP_NUM_THREADS=1`
the CPU seconds are the variant's own cost even when other jobs share the machine). A windows run also reports the
accuracy of the same model with its windows pooled by max instead of mean (`model.window_pool`). The timed
prediction pass (and so the pooling comparison) reads a seeded sample of `--predict-rows` test documents when
given: on full IMDb a second pass over all 25,000 reviews would double the test cost for a figure the training run
already measured.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "truncate-head+tail-128": {"model.max_length": 128, "model.truncation": "head+tail"},
    "windows-128": {"model.max_length": 128, "model.long_text": "windows", "model.stride": 32,
                    "model.max_windows": 5},  # 126 + 4 x 94 = 502 distinct tokens: about head+tail-512's budget
    "windows-128x4": {"model.max_length": 128, "model.long_text": "windows", "model.stride": 32,
                      "model.max_windows": 4},  # 126 + 3 x 94 = 408 distinct tokens
    "truncate-head+tail-320": {"model.max_length": 320, "model.truncation": "head+tail"},  # windows-128x4's tokens
    "truncate-head+tail-512": {"model.max_length": 512, "model.truncation": "head+tail"},
    "windows-512": {"model.max_length": 512, "model.long_text": "windows", "model.stride": 128},
}


def run_variant(name: str, base: dict, out: Path, predict_rows: int | None = None) -> dict:
    """Train one variant and measure it on the test split (the timed pass on a seeded sample of `predict_rows`)."""
    import numpy as np
    import torch

    from textlora.config import RunConfig
    from textlora.data.batching import Encoded, encode_for
    from textlora.data.splits import load_dataset
    from textlora.model.inference import forward_logits
    from textlora.predict import Predictor
    from textlora.train import train

    cfg = RunConfig.from_dict(base).with_overrides({**VARIANTS[name], "out": str(out / name),
                                                    "train.checkpoint_every": 0})
    t0, c0 = time.time(), time.process_time()
    result = train(cfg, overwrite=True, progress=False)
    train_s, train_cpu = time.time() - t0, time.process_time() - c0
    data = load_dataset(cfg.data)
    clf = Predictor.load(out / name)
    texts, y = data.test.texts, np.asarray(data.label_map.encode(data.test.labels))
    enc = encode_for(clf.tokenizer, texts, clf.config.model)
    tokens_per_doc, windows_per_doc = sum(enc.lengths) / len(texts), len(enc) / len(texts)
    if predict_rows is not None and predict_rows < len(texts):  # a seeded sample: IMDb's test file is sorted by label
        keep = np.sort(np.random.default_rng(0).choice(len(texts), predict_rows, replace=False))
        texts, y = [texts[i] for i in keep], y[keep]
        enc = encode_for(clf.tokenizer, texts, clf.config.model)
    t0, c0 = time.time(), time.process_time()
    rows = forward_logits(clf.model, Encoded(enc.input_ids), clf.tokenizer.pad_token_id)  # one row per window
    predict_s, predict_cpu = time.time() - t0, time.process_time() - c0
    line = {"bench": "long_text", "variant": name, "settings": VARIANTS[name],
            "train_rows": len(data.train), "test_rows": len(data.test),
            "test_accuracy": round(float(result.metrics["test"]["accuracy"]), 4),
            "tokens_per_doc": round(tokens_per_doc, 1), "windows_per_doc": round(windows_per_doc, 2),
            "train_seconds": round(train_s, 1), "train_cpu_seconds": round(train_cpu, 1),
            "predict_rows": len(texts), "test_predict_seconds": round(predict_s, 1),
            "test_predict_cpu_seconds": round(predict_cpu, 1), "torch_threads": torch.get_num_threads()}
    if enc.doc is not None:
        for pool in ("mean", "max"):
            enc.pool = pool
            acc = float((enc.per_text(rows).argmax(1) == y).mean())
            line[f"predict_rows_accuracy_{pool}_pool"] = round(acc, 4)
    return line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "s3_imdb_1000.yaml"))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "imdb"))
    p.add_argument("--variants", nargs="+", default=["truncate-head+tail-128", "windows-128"],
                   choices=list(VARIANTS))
    p.add_argument("--max-train-samples", type=int)
    p.add_argument("--max-eval-samples", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--predict-rows", type=int,
                   help="time prediction (and compare pooling) on a seeded sample of this many test rows")
    p.add_argument("--out", default=None)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for every variant, e.g. lora.top_layers=1 train.eval_base=false")
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import yaml

    base = yaml.safe_load(Path(args.config).read_text())
    base["data"]["path"] = args.data
    for key, value in (("max_train_samples", args.max_train_samples), ("max_eval_samples", args.max_eval_samples)):
        if value is not None:
            base["data"][key] = value
    if args.epochs is not None:
        base["train"]["epochs"] = args.epochs
    for item in args.set:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        base.setdefault(section, {})[name] = yaml.safe_load(value)
    out = Path(args.out or tempfile.mkdtemp(prefix="long_text_"))
    for name in args.variants:
        print(json.dumps(run_variant(name, base, out, args.predict_rows)), flush=True)


if __name__ == "__main__":
    main()
