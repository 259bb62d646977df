"""The `textlora` command: parse flags and `key=value` overrides into a config, call the library.

    textlora train --data ../shared/datasets/emotion --out runs/emotion-lora
    textlora train --config configs/s1_emotion_lora.yaml train.lr=5e-4
    textlora predict runs/emotion-lora "i feel wonderful today"
    textlora eval runs/emotion-lora --data ../shared/datasets/emotion --split test
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from textlora.errors import TextloraError

# flag -> dotted config key; the flag's help is the field's docstring in config.py
TRAIN_FLAGS = {
    "--data": ("data.path", str), "--text-column": ("data.text_column", str),
    "--label-column": ("data.label_column", str), "--label-sep": ("data.label_sep", str),
    "--text-pair-column": ("data.text_pair_column", str), "--max-train-samples": ("data.max_train_samples", int),
    "--max-eval-samples": ("data.max_eval_samples", int),
    "--model": ("model.name", str), "--method": ("model.method", str), "--max-length": ("model.max_length", int),
    "--r": ("lora.r", int), "--alpha": ("lora.alpha", float), "--dropout": ("lora.dropout", float),
    "--target-modules": ("lora.target_modules", str),
    "--epochs": ("train.epochs", int), "--lr": ("train.lr", float), "--batch-size": ("train.batch_size", int),
    "--weight-decay": ("train.weight_decay", float), "--seed": ("train.seed", int),
    "--out": ("out", str),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(prog="textlora", description="Fine-tune, evaluate and use small text classifiers.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="fine-tune a model and evaluate it; writes a run folder")
    t.add_argument("--config", help="YAML run config; flags and key=value overrides apply on top")
    for flag, (key, typ) in TRAIN_FLAGS.items():
        t.add_argument(flag, type=typ, dest=key.replace(".", "__"), help=f"sets {key}")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run at --out")
    resume = t.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint (fail if there is none); re-running the same "
                             "command resumes anyway when a checkpoint of the same config exists")
    resume.add_argument("--no-resume", action="store_true", help="discard checkpoints and start fresh")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.lr=2e-4 lora.r=8")

    e = sub.add_parser("eval", help="evaluate a run on a dataset split")
    e.add_argument("run")
    e.add_argument("--data", required=True, help="dataset folder or file")
    e.add_argument("--split", default="test", choices=["train", "validation", "test"])
    e.add_argument("--text-column")
    e.add_argument("--label-column")
    e.add_argument("--output", help="write the full metrics as JSON here")

    pr = sub.add_parser("predict", help="classify texts with a run")
    pr.add_argument("run")
    pr.add_argument("texts", nargs="*", help="texts to classify")
    pr.add_argument("--input", help="a .txt file (one text a line) or a data file with a text column")
    pr.add_argument("--text-column", default="text")
    pr.add_argument("--output", help="JSONL output file (default: stdout)")
    pr.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    for q in (e, pr):
        q.add_argument("--no-check-base", action="store_true", help="skip the base-model weight check")
    x = sub.add_parser("export", help="write a run as a merged full-precision Hugging Face model folder")
    x.add_argument("run")
    x.add_argument("--out", required=True, help="a new folder")
    x.add_argument("--no-check-base", action="store_true", help="skip the base-model weight check")
    _add_serve_parser(sub)
    return p


def config_from_args(args: argparse.Namespace) -> Any:
    """The RunConfig for `train`: file (or defaults), then flags, then key=value overrides."""
    from textlora.config import RunConfig, parse_overrides

    cfg = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    flags = {key: getattr(args, key.replace(".", "__")) for key, _ in TRAIN_FLAGS.values()}
    flags = {k: v for k, v in flags.items() if v is not None}
    return cfg.with_overrides({**flags, **parse_overrides(args.overrides)})


def cmd_train(args: argparse.Namespace) -> int:
    from textlora.report import write_figures
    from textlora.train import train

    cfg = config_from_args(args)
    resume = "must" if args.resume else "never" if args.no_resume else "auto"
    result = train(cfg, overwrite=args.overwrite, progress=not args.quiet, before_commit=write_figures,
                   resume=resume)
    test = result.metrics["test"]
    multi = (f"  micro-F1: {test['f1_micro']:.4f}  single-label accuracy: {test['single_label_accuracy']:.4f} "
             "(accuracy is subset accuracy)") if "f1_micro" in test else ""
    print(f"test accuracy: {test['accuracy']:.4f}  macro-F1: {test['f1_macro']:.4f}{multi}  "
          f"(untrained base: {result.metrics.get('base', {}).get('test', {}).get('accuracy', float('nan')):.4f})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from textlora.predict import Predictor, evaluate_split

    clf = Predictor.load(args.run, check_base=not args.no_check_base)
    m = evaluate_split(clf, args.data, args.split, args.text_column, args.label_column)
    print(f"{args.split}: n={m['n']}  accuracy {m['accuracy']:.4f}  macro-F1 {m['f1_macro']:.4f}  "
          f"weighted-F1 {m['f1_weighted']:.4f}  loss {m['loss']:.4f}")
    for name, r in m["per_class"].items():
        print(f"  {name:>20}  P {r['precision']:.3f}  R {r['recall']:.3f}  F1 {r['f1']:.3f}  n={r['support']}")
    if args.output:
        Path(args.output).write_text(json.dumps(m, indent=2), encoding="utf-8")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from textlora.predict import Predictor, read_texts

    texts = list(args.texts) + (read_texts(args.input, args.text_column) if args.input else [])
    if not texts:
        raise TextloraError("nothing to classify: give texts as arguments or --input FILE.")
    clf = Predictor.load(args.run, check_base=not args.no_check_base)
    proba = clf.predict_proba(texts)
    chosen = clf.predict(texts) if clf.label_map.multi_label else [clf.labels_[int(p.argmax())] for p in proba]
    rows = [{"text": t, "label": c, "scores": {name: round(float(s), 6) for name, s in zip(clf.labels_, p)}}
            for t, c, p in zip(texts, chosen, proba)]  # multi-label: "label" is the list over the thresholds
    if args.output or args.json or args.input:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if args.output:
            Path(args.output).write_text(lines, encoding="utf-8")
            print(f"wrote {len(rows)} predictions to {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(lines)
    else:
        for r in rows:
            shown = r["label"] if isinstance(r["label"], list) else [r["label"]]
            scores = ",".join(f"{r['scores'][n]:.3f}" for n in shown)
            print(f"{','.join(shown) or '-'}\t{scores or '-'}\t{r['text']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from textlora.predict import export_merged

    out = export_merged(args.run, args.out, check_base=not args.no_check_base)
    print(f"wrote {out}: load it with AutoModelForSequenceClassification.from_pretrained({str(out)!r})")
    return 0


# --- serve (issue 6) ---------------------------------------------------------------------------

def _add_serve_parser(sub: Any) -> None:
    """`textlora serve RUN [RUN ...]`; each flag's default is the `ServeOptions` field's."""
    s = sub.add_parser("serve", help="serve runs over HTTP; runs on the same base share it in memory")
    s.add_argument("runs", nargs="+", metavar="RUN", help="a run folder, or NAME=FOLDER (name used by clients)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-texts", type=int, default=64, help="most texts per request (422 beyond)")
    s.add_argument("--max-chars", type=int, default=2000, help="most characters per text (422 beyond)")
    s.add_argument("--max-body-bytes", type=int, default=1_000_000, help="largest request body (413 beyond)")
    s.add_argument("--max-wait-ms", type=float, default=5.0, help="micro-batching: longest wait for more requests")
    s.add_argument("--max-batch", type=int, default=64, help="micro-batching: most texts per forward pass")
    s.add_argument("--no-batching", action="store_true", help="one forward pass per request")
    s.add_argument("--threads", type=int, help="torch CPU threads for inference (default: one per core)")
    s.add_argument("--no-check-base", action="store_true", help="skip the base-model weight check")


def cmd_serve(args: argparse.Namespace) -> int:
    from textlora.serve import ServeOptions, serve

    serve(args.runs, ServeOptions(host=args.host, port=args.port, max_texts=args.max_texts, max_chars=args.max_chars,
                                  max_body_bytes=args.max_body_bytes, max_wait_ms=args.max_wait_ms,
                                  max_batch=args.max_batch, batching=not args.no_batching,
                                  threads=args.threads, check_base=not args.no_check_base))
    return 0

# --- end serve ---------------------------------------------------------------------------------


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "serve": cmd_serve,
            "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `textlora` console script."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except TextloraError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # an optional extra that is not installed; the message names the package
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
