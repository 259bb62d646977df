"""Train speed and accuracy: textlora vs Hugging Face Trainer + PEFT (the peer), one after the other.

    python bench/train_vs_peer.py --epochs 1                              # full emotion train set
    python bench/train_vs_peer.py --epochs 1 --max-train-samples 2000     # ~2 minutes

Each side runs in its own child process (so its peak RSS is its own) on the same data and base
model. The peer uses the setup users write today (DEVELOPERS issue 3): LoRA r=16, alpha=32,
dropout 0.1 on query/value, DataCollatorWithPadding, batch 16, lr 5e-4, weight decay 0.01.
textlora runs with its defaults (all attention/MLP projections, batch 32, lr 1e-3, no dropout);
`--ours-peer-hparams` also runs textlora with exactly the peer's hyper-parameters, to separate
the engine's speed from the defaults'; `--ours-top-layers N` also runs textlora with adapters on the
top N layers only and the frozen lower layers' outputs cached (the time to build the cache counts as
training time); `--ours-bf16` also runs textlora's defaults with `train.precision=bf16` (its FLOP share is
quoted against the bf16 matmul peak, measured in the same run). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from textlora.memory import peak_rss_mb  # noqa: E402 - light module, no torch

PEER_HPARAMS = {"r": 16, "alpha": 32, "dropout": 0.1, "targets": ["query", "value"], "batch": 16, "lr": 5e-4,
                "weight_decay": 0.01}


def matmul_peak_gflops(n: int = 1024, reps: int = 30, dtype: str = "float32", device: str = "cpu") -> float:
    """torch.matmul throughput on this machine's CPU or GPU (fp32, or bf16), the ceiling we quote utilisation
    against."""
    import torch

    if device != "cpu":
        n, reps = 8192, 20
    kw = {"dtype": getattr(torch, dtype), "device": device}
    a, b = torch.randn(n, n, **kw), torch.randn(n, n, **kw)
    for _ in range(3):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def _sync(device: str) -> None:
    if device != "cpu":
        import torch

        torch.cuda.synchronize()


def _load_split(data: str, split: str, limit: int | None, seed: int = 42):
    from textlora.config import DataConfig
    from textlora.data.splits import load_dataset

    d = load_dataset(DataConfig(path=data, max_train_samples=limit, split_seed=seed))
    return d, d.splits()[split]


def run_peer(args: argparse.Namespace) -> dict:
    """Trainer + PEFT, the recipe of the reference notebooks; on a GPU with bf16 (fp16 where the GPU has no bf16)
    mixed precision, as users write it there."""
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from textlora.metrics import classification_metrics
    from textlora.model.load import resolve_base

    d, _ = _load_split(args.data, "train", args.max_train_samples)
    labels = d.label_map
    path = resolve_base(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(42)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=labels.num_labels,
                                                               id2label=labels.id2label, label2id=labels.label2id)
    h = PEER_HPARAMS
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=h["r"], lora_alpha=h["alpha"],
                                             lora_dropout=h["dropout"], target_modules=h["targets"]))

    def encode(split):
        enc = tok(split.texts, truncation=True, max_length=256)
        ys = labels.encode(split.labels)
        return [{"input_ids": i, "attention_mask": m, "labels": y}
                for i, m, y in zip(enc["input_ids"], enc["attention_mask"], ys)]

    train_rows, test_rows = encode(d.train), encode(d.test)
    out = tempfile.mkdtemp()
    gpu = args.device != "cpu"
    bf16 = gpu and torch.cuda.is_bf16_supported()
    targs = TrainingArguments(output_dir=out, per_device_train_batch_size=h["batch"], per_device_eval_batch_size=64,
                              learning_rate=h["lr"], weight_decay=h["weight_decay"], num_train_epochs=args.epochs,
                              report_to=[], save_strategy="no", logging_steps=100, use_cpu=not gpu, seed=42,
                              dataloader_num_workers=0, disable_tqdm=True, bf16=bf16, fp16=gpu and not bf16)
    trainer = Trainer(model=model, args=targs, train_dataset=train_rows, data_collator=DataCollatorWithPadding(tok))
    t = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t
    logits = trainer.predict(test_rows).predictions
    m = classification_metrics([r["labels"] for r in test_rows], np.argmax(logits, axis=1), labels.labels)
    tokens = sum(len(r["input_ids"]) for r in train_rows)
    out = _result("peer: Trainer + PEFT", len(train_rows), tokens, seconds, args.epochs, m)
    out["mflop_per_token"] = round(_mflop_per_token(None, args.epochs), 1)
    out["precision"] = "bf16" if bf16 else "fp16" if gpu else "fp32"
    out.update(_gpu_memory(args.device))
    return out


def _gpu_memory(device: str) -> dict:
    """Peak GPU memory of this child process, when it ran on a GPU."""
    if device == "cpu":
        return {}
    import torch

    return {"peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def run_ours(args: argparse.Namespace, peer_hparams: bool = False, top_layers: int | None = None,
             precision: str | None = None) -> dict:
    """textlora.train with its defaults (or the peer's hyper-parameters, or adapters on the top layers, or
    another training precision)."""
    from textlora.config import RunConfig
    from textlora.train import train

    over = {"data": {"path": args.data, "max_train_samples": args.max_train_samples},
            "model": {"name": args.model}, "train": {"epochs": args.epochs, "eval_base": False, "device": args.device},
            "out": tempfile.mkdtemp() + "/run"}
    if peer_hparams:
        h = PEER_HPARAMS
        over["model"]["dropout"] = None  # the checkpoint's own dropout, as in the peer
        over["lora"] = {"r": h["r"], "alpha": h["alpha"], "dropout": h["dropout"], "target_modules": h["targets"]}
        over["train"].update(batch_size=h["batch"], lr=h["lr"], weight_decay=h["weight_decay"])
    if top_layers:
        over["lora"] = {"top_layers": top_layers}
    if precision:
        over["train"]["precision"] = precision
    for kv in args.ours:
        k, v = kv.split("=", 1)
        section, key = k.split(".", 1)
        over.setdefault(section, {})[key] = json.loads(v) if v[:1] in "0123456789-[{tn" else v
    result = train(RunConfig.from_dict(over), progress=False)
    seconds = sum(h["seconds"] for h in result.metrics["history"])  # training only, not the per-epoch validation
    seconds += result.metrics.get("layer_cache", {}).get("seconds", 0.0)  # all splits' lower layers, once
    d, _ = _load_split(args.data, "train", args.max_train_samples)
    from textlora.data.batching import encode
    from textlora.model.load import load_tokenizer, resolve_base

    tokens = sum(encode(load_tokenizer(resolve_base(args.model)), d.train.texts, 256).lengths)
    name = ("textlora (peer hyper-parameters)" if peer_hparams else
            f"textlora (lora.top_layers={top_layers}, lower layers cached)" if top_layers else
            f"textlora (train.precision={precision})" if precision else "textlora (defaults)")
    out = _result(name, len(d.train), tokens, seconds, args.epochs, result.metrics["test"])
    out["mflop_per_token"] = round(_mflop_per_token(top_layers, args.epochs), 1)
    out["precision"] = json.loads((result.out / "manifest.json").read_text())["precision"]  # auto, resolved
    out.update(_gpu_memory(args.device))
    return out


LAYERS, LAYER_FWD_MFLOP = 6, 42.4 / 12
"""MiniLM-L6: a layer's forward costs ~3.5 MFLOP per token; LoRA training ~2x that (forward + input gradients)."""


def _mflop_per_token(top_layers: int | None, epochs: int) -> float:
    """Training MFLOP per token and epoch: every layer forward + backward, or with the cache the lower
    layers' forward once (spread over the epochs) and the top layers' forward + backward."""
    if not top_layers:
        return 2 * LAYERS * LAYER_FWD_MFLOP
    return (LAYERS - top_layers) * LAYER_FWD_MFLOP / epochs + 2 * top_layers * LAYER_FWD_MFLOP


def _result(name: str, n: int, tokens: int, seconds: float, epochs: int, m: dict) -> dict:
    return {"name": name, "train_examples": n, "epochs": epochs, "train_seconds": round(seconds, 1),
            "seconds_per_epoch": round(seconds / epochs, 1), "train_examples_per_s": round(n * epochs / seconds, 1),
            "train_tokens_per_s": round(tokens * epochs / seconds, 1), "mean_tokens": round(tokens / n, 1),
            "test_accuracy": round(m["accuracy"], 4), "test_f1_macro": round(m["f1_macro"], 4),
            "peak_rss_mb": round(peak_rss_mb(), 1)}  # VmHWM of this child process


def _child(which: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--data", args.data, "--model", args.model,
           "--epochs", str(args.epochs), "--ours-top-layers", str(args.ours_top_layers or 0),
           "--device", args.device] + (["--max-train-samples", str(args.max_train_samples)]
                                            if args.max_train_samples else []) + [x for o in args.ours
                                                                                  for x in ("--ours", o)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if out.returncode != 0:
        raise SystemExit(f"{which} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets",
                                                  "emotion"))
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-train-samples", type=int)
    p.add_argument("--ours-peer-hparams", action="store_true", help="also run textlora with the peer's settings")
    p.add_argument("--no-ours-defaults", dest="ours_defaults", action="store_false",
                   help="skip the run of textlora's defaults (e.g. with --ours-top-layers, to save time)")
    p.add_argument("--ours-top-layers", type=int, metavar="N", help="also run textlora with lora.top_layers=N")
    p.add_argument("--ours-bf16", action="store_true", help="also run textlora's defaults with train.precision=bf16")
    p.add_argument("--ours-fp32", action="store_true", help="also run textlora's defaults with train.precision=fp32")
    p.add_argument("--device", default="cpu", help="cpu, or cuda: every run on that device (the peer as well)")
    p.add_argument("--ours", action="append", default=[], metavar="section.key=value",
                   help="override textlora's config, e.g. --ours lora.r=8")
    p.add_argument("--child", choices=["peer", "ours", "ours-peer", "ours-top", "ours-bf16", "ours-fp32"],
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        fn = {"peer": run_peer, "ours": run_ours, "ours-peer": lambda a: run_ours(a, peer_hparams=True),
              "ours-top": lambda a: run_ours(a, top_layers=a.ours_top_layers),
              "ours-bf16": lambda a: run_ours(a, precision="bf16"),
              "ours-fp32": lambda a: run_ours(a, precision="fp32")}[args.child]
        print(json.dumps(fn(args)))
        return
    peak = {"fp32": matmul_peak_gflops(device=args.device), "bf16": matmul_peak_gflops(dtype="bfloat16", device=args.device)}
    if args.device != "cpu":
        peak["fp16"] = matmul_peak_gflops(dtype="float16", device=args.device)
    runs = [_child("peer", args)] + ([_child("ours", args)] if args.ours_defaults else [])
    for flag, child in (("ours_peer_hparams", "ours-peer"), ("ours_top_layers", "ours-top"), ("ours_bf16", "ours-bf16"),
                        ("ours_fp32", "ours-fp32")):
        if getattr(args, flag):
            runs.append(_child(child, args))
    for r in runs:
        r["gflop_per_s"] = round(r["train_tokens_per_s"] * r["mflop_per_token"] / 1000, 1)
        r["share_of_matmul_peak"] = round(r["gflop_per_s"] / peak[r.get("precision", "fp32")], 3)
    peer = runs[0]
    print(json.dumps({
        "bench": "train_vs_peer", "data": os.path.basename(os.path.normpath(args.data)), "epochs": args.epochs,
        "device": args.device, **_device_name(args.device),
        "matmul_peak_gflops": round(peak["fp32"], 1),
        **{f"matmul_peak_gflops_{k}": round(v, 1) for k, v in peak.items() if k != "fp32"}, "runs": runs,
        "speedup_examples_per_s": {r["name"]: round(r["train_examples_per_s"] / peer["train_examples_per_s"], 2)
                                   for r in runs[1:]},
        "accuracy_delta_points": {r["name"]: round(100 * (r["test_accuracy"] - peer["test_accuracy"]), 2)
                                  for r in runs[1:]},
    }))


def _device_name(device: str) -> dict:
    if device == "cpu":
        return {}
    import torch

    return {"gpu": torch.cuda.get_device_name(0)}


if __name__ == "__main__":
    main()
