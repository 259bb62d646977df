"""The `textlora` command: parse flags and `key=value` overrides into a config, call the library.

    textlora train --data data/emotion --out runs/emotion-lora
    textlora train --config configs/s1_emotion_lora.yaml train.lr=5e-4
    textlora predict runs/emotion-lora "i feel wonderful today"
    textlora eval runs/emotion-lora --data data/emotion --split test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any, get_args

from textlora.config import METRIC_DIRECTION, Precision, Runtime, config_docs, field_docs
from textlora.errors import TextloraError
from textlora.serve.options import ServeOptions


def _yaml_value(text: str) -> Any:
    """A flag value read as YAML, as `key=value` overrides are: `balanced`, or a mapping `{love: 3, surprise: 5}`."""
    from textlora.config import parse_overrides

    return parse_overrides([f"value={text}"])["value"]


# flag -> dotted config key; the flag's help is the field's docstring in config.py
TRAIN_FLAGS = {
    "--data": ("data.path", str), "--text-column": ("data.text_column", str),
    "--label-column": ("data.label_column", str), "--label-sep": ("data.label_sep", str),
    "--text-pair-column": ("data.text_pair_column", str), "--max-train-samples": ("data.max_train_samples", int),
    "--max-eval-samples": ("data.max_eval_samples", int), "--shots": ("data.shots_per_class", int),
    "--model": ("model.name", str), "--method": ("model.method", str), "--max-length": ("model.max_length", int),
    "--truncation": ("model.truncation", str),
    "--r": ("lora.r", int), "--alpha": ("lora.alpha", float), "--dropout": ("lora.dropout", float),
    "--target-modules": ("lora.target_modules", str),
    "--epochs": ("train.epochs", int), "--lr": ("train.lr", float), "--batch-size": ("train.batch_size", int),
    "--weight-decay": ("train.weight_decay", float), "--seed": ("train.seed", int),
    "--precision": ("train.precision", str), "--device": ("train.device", str), "--out": ("out", str),
    "--loss": ("train.loss", str), "--class-weights": ("train.class_weights", _yaml_value),
    "--grad-accum": ("train.grad_accum", int), "--eval-every": ("train.eval_every", int),
    "--patience": ("train.patience", int), "--max-minutes": ("train.max_minutes", float),
    "--report-to": ("train.report_to", str),
}



DEVICE_HELP = "auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N"
PRECISION_CHOICES = list(get_args(Precision))
RUNTIME_HELP = ("torch, or onnx: the run's merged model exported once to ONNX (cached in the run folder) and run by "
                "ONNX Runtime on the CPU; needs the onnx extra")
PRECISION_HELP = ("fp32 (default: what the run's metrics were computed in); bf16/fp16 (GPU only) autocast, faster where "
                  "the hardware has it, slightly less exact; auto: the device's fastest")


def _help(doc: str, key: str) -> str:
    """A flag's help: the documentation of the field it sets, and the field's key (argparse's % escaped)."""
    return f"{doc} [{key}]".strip().replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(prog="textlora", description="Fine-tune, evaluate and use small text classifiers.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="fine-tune a model and evaluate it; writes a run folder")
    t.add_argument("--config", help="YAML run config; flags and key=value overrides apply on top")
    docs = config_docs()
    for flag, (key, typ) in TRAIN_FLAGS.items():
        t.add_argument(flag, type=typ, dest=key.replace(".", "__"), metavar=key.rsplit(".", 1)[-1].upper(),
                       help=_help(docs.get(key, ""), key))
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
    pr.add_argument("--no-calibrate", action="store_true",
                    help="raw softmax scores: do not apply the temperature the run recorded in calibration.json")
    for q in (e, pr):
        q.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32", help=PRECISION_HELP)
        q.add_argument("--no-check-base", action="store_true", help="skip the base-model weight check")
        q.add_argument("--runtime", choices=list(get_args(Runtime)), default="torch", help=RUNTIME_HELP)
        q.add_argument("--int8", action="store_true", help="int8 weights (CPU): PyTorch's dynamic quantization, or "
                                                           "with --runtime onnx the int8 ONNX model")
    x = sub.add_parser("export", help="write a run as a merged Hugging Face model folder, or as ONNX")
    x.add_argument("run")
    x.add_argument("--format", choices=["hf", "onnx"], default="hf",
                   help="hf: a merged full-precision Hugging Face folder at --out; onnx: the ONNX model, cached in "
                        "the run folder (onnx/) and copied to --out with the tokenizer and labels when given")
    x.add_argument("--int8", action="store_true", help="with --format onnx: the int8 ONNX model (quantized from the "
                                                       "fp32 one; both are cached)")
    x.add_argument("--out", help="a new folder (required for --format hf)")
    x.add_argument("--no-check-base", action="store_true", help="skip the base-model weight check")
    for q in (e, pr, x):
        q.add_argument("--device", default="cpu" if q is x else "auto", help=DEVICE_HELP)
    _add_serve_parser(sub)
    add_report_commands(sub)
    add_audit_command(sub)
    return p


def config_from_args(args: argparse.Namespace) -> Any:
    """The RunConfig for `train`: file (or defaults), then flags, then key=value overrides."""
    from textlora.config import RunConfig, parse_overrides

    cfg = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    flags = {key: getattr(args, key.replace(".", "__")) for key, _ in TRAIN_FLAGS.values()}
    flags = {k: v for k, v in flags.items() if v is not None}
    return cfg.with_overrides({**flags, **parse_overrides(args.overrides)})


def cmd_train(args: argparse.Namespace) -> int:
    from textlora.report import write_run_artifacts
    from textlora.train import train

    cfg = config_from_args(args)
    resume = "must" if args.resume else "never" if args.no_resume else "auto"
    result = train(cfg, overwrite=args.overwrite, progress=not args.quiet, before_commit=write_run_artifacts,
                   resume=resume)
    if args.quiet and "stopped_early" in result.metrics:  # else training has said so
        from textlora.loop import stopped_line

        print(stopped_line(result.metrics["stopped_early"], cfg.train))
    test = result.metrics["test"]
    multi = (f"  micro-F1: {test['f1_micro']:.4f}  single-label accuracy: {test['single_label_accuracy']:.4f} "
             "(accuracy is subset accuracy)") if "f1_micro" in test else ""
    print(f"test accuracy: {test['accuracy']:.4f}  macro-F1: {test['f1_macro']:.4f}{multi}  "
          f"(untrained base: {result.metrics.get('base', {}).get('test', {}).get('accuracy', float('nan')):.4f})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from textlora.predict import Predictor, evaluate_split

    _check_output_file(args.output)
    clf = Predictor.load(args.run, check_base=not args.no_check_base, precision=args.precision, device=args.device,
                         runtime=args.runtime, int8=args.int8)
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

    _check_output_file(args.output)
    texts = list(args.texts) + (read_texts(args.input, args.text_column) if args.input else [])
    if not texts:
        raise TextloraError("nothing to classify: give texts as arguments or --input FILE.")
    clf = Predictor.load(args.run, check_base=not args.no_check_base, precision=args.precision, device=args.device,
                         calibrate=not args.no_calibrate, runtime=args.runtime, int8=args.int8)
    proba = clf.predict_proba(texts)
    chosen = clf.kind.decide(proba, clf.thresholds_)
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


def _check_output_file(output: str | None) -> None:
    """An --output file must go into an existing folder: erring is safer than creating folders the user did not ask for."""
    if output is None:
        return
    p = Path(output)
    if p.is_dir():
        raise TextloraError(f"--output {output} is a folder; pass a file path, e.g. {p / 'predictions.jsonl'}.")
    if not p.parent.is_dir():
        raise TextloraError(f"--output {output}: folder {p.parent} does not exist; create it first or choose "
                            "another --output.")


def cmd_export(args: argparse.Namespace) -> int:
    from textlora.predict import export_merged

    if args.format == "onnx":
        return _export_onnx(args)
    if args.int8 or not args.out:
        raise TextloraError("export --format hf needs --out FOLDER and takes no --int8 (the merged Hugging Face "
                            "folder is fp32); for int8 use --format onnx --int8.")
    out = export_merged(args.run, args.out, check_base=not args.no_check_base, device=args.device)
    print(f"wrote {out}: load it with AutoModelForSequenceClassification.from_pretrained({str(out)!r})")
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    """`export --format onnx`: the run's ONNX model (int8: quantized from the fp32 one, both cached), copied to --out
    with the tokenizer and labels when given."""
    from textlora.model.onnx_runtime import export_folder, onnx_path
    from textlora.run_folder import Run

    run, check = Run.open(args.run), not args.no_check_base
    path = export_folder(run, Path(args.out), args.int8, check) if args.out else onnx_path(run, args.int8, check)
    print(f"wrote {path} (textlora predict RUN --runtime onnx{' --int8' if args.int8 else ''} uses the run's cached "
          "copy)")
    return 0


# --- serve -------------------------------------------------------------------------------------

def _add_serve_parser(sub: Any) -> None:
    """`textlora serve RUN [RUN ...]`: one flag per `ServeOptions` field, with its default and documentation (a
    boolean that defaults to on becomes `--no-NAME`)."""
    s = sub.add_parser("serve", help="serve runs over HTTP; runs on the same base share it in memory")
    s.add_argument("runs", nargs="+", metavar="RUN", help="a run folder, or NAME=FOLDER (name used by clients)")
    docs, hints = field_docs(ServeOptions), typing.get_type_hints(ServeOptions)
    for f in dataclasses.fields(ServeOptions):
        hint = hints[f.name]
        if hint is bool:
            flag = f"--no-{f.name.replace('_', '-')}" if f.default else f"--{f.name.replace('_', '-')}"
            s.add_argument(flag, dest=f.name, action="store_false" if f.default else "store_true",
                           help=_help(docs.get(f.name, ""), "on by default; this flag turns it off" if f.default
                                      else "off by default"))
            continue
        if typing.get_origin(hint) is not typing.Literal:  # X | None -> X
            hint = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        literal = typing.get_origin(hint) is typing.Literal
        s.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=f.default,
                       type=str if literal else hint, choices=list(typing.get_args(hint)) if literal else None,
                       help=_help(docs.get(f.name, ""), f"default {f.default}"))


def cmd_serve(args: argparse.Namespace) -> int:
    from textlora.serve import serve

    serve(args.runs, ServeOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeOptions)}))
    return 0

# --- end serve ---------------------------------------------------------------------------------


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "serve": cmd_serve,
            "export": cmd_export}


# ---- report, compare, sweep, runs: look at runs and line them up ---------------------------------------

def add_report_commands(sub: Any) -> None:
    """The `report`, `compare`, `sweep` and `runs` subcommands."""
    r = sub.add_parser("report", help="render a run's self-contained HTML report (report.html)")
    r.add_argument("run")
    r.add_argument("--out", help="HTML file to write (default: RUN/report.html)")

    c = sub.add_parser("compare", help="line runs up (terminal + HTML table, accuracy-vs-time plot)")
    c.add_argument("runs", nargs="*", help="finished run folders")
    c.add_argument("--out", help="folder for compare.html/.md and the plot (default: beside the first run, "
                                 "or runs/compare)")
    c.add_argument("--baselines", action="store_true",
                   help="first train the ladder majority, tfidf_logreg, zero-shot, embed, setfit, head, lora, full "
                        "on the same splits (--shots N: N training rows per class for every rung)")
    c.add_argument("--rungs", help="comma-separated subset of the ladder (default: all eight)")
    c.add_argument("--config", help="RunConfig YAML for the ladder (default: the first run's config.yaml)")
    for flag, key in LADDER_FLAGS.items():
        c.add_argument(flag, type=TRAIN_FLAGS[flag][1], dest=key.replace(".", "__"), help=f"ladder: sets {key}")
    c.add_argument("--quiet", action="store_true")

    sw = sub.add_parser("sweep", help="Optuna search over lr, dropout, r, alpha, weight decay; prunes bad trials")
    sw.add_argument("--config", required=True, help="YAML run config the trials start from")
    sw.add_argument("--trials", type=int, required=True,
                    help="finished (complete or pruned) trials the study should hold, over all its workers; a "
                         "resumed study runs only the missing ones")
    sw.add_argument("--out", help="sweep folder (default: <config out>-sweep)")
    sw.add_argument("--storage", help="database URL shared by workers, e.g. postgresql://USER@HOST:PORT/DB "
                                      "(default: sqlite in the sweep folder)")
    sw.add_argument("--study-name", default="textlora")
    sw.add_argument("--seed", type=int, help="sampler seed (default: train.seed); give each worker its own")
    sw.add_argument("--metric", choices=list(METRIC_DIRECTION),
                    help="validation metric to optimise (maximised; loss minimised); default: train.select_metric")
    sw.add_argument("--space", help="YAML file: key: {low, high, log, int} or key: null, applied to the defaults")
    sw.add_argument("--range", action="append", default=[], metavar="KEY=LOW:HIGH[:log][:int]",
                    help="change one searched range (repeatable); KEY=off drops it")
    sw.add_argument("--no-prune", action="store_true", help="run every trial to the end")
    sw.add_argument("--device", help=f"sets train.device of every trial: {DEVICE_HELP}")
    sw.add_argument("--quiet", action="store_true")
    sw.add_argument("overrides", nargs="*", metavar="key=value", help="fixed overrides of the config")

    ru = sub.add_parser("runs", help="list the finished runs under a folder with their key metrics")
    ru.add_argument("dir", nargs="?", default="runs")


def cmd_report(args: argparse.Namespace) -> int:
    from textlora.report import write_report
    from textlora.run_folder import require_run

    print(f"wrote {write_report(require_run(args.run), args.out)}")
    return 0


LADDER_FLAGS = {f: TRAIN_FLAGS[f][0] for f in ("--data", "--model", "--max-train-samples", "--max-eval-samples",
                                               "--shots", "--max-length", "--epochs", "--batch-size", "--seed",
                                               "--device")}


def cmd_compare(args: argparse.Namespace) -> int:
    from textlora.compare import LADDER, compare
    from textlora.config import RunConfig
    from textlora.run_folder import Run

    if not args.runs and not args.baselines:
        raise TextloraError("nothing to compare: give run folders, and/or --baselines with --data or --config.")
    ladder = None
    if args.baselines:
        base = (RunConfig.from_yaml(args.config) if args.config else
                Run.open(args.runs[0]).config if args.runs else RunConfig())
        flags = {k: getattr(args, k.replace(".", "__")) for k in LADDER_FLAGS.values()}
        ladder = base.with_overrides({k: v for k, v in flags.items() if v is not None})
        if not ladder.data.path:
            raise TextloraError("--baselines needs data: give a run folder, --config or --data.")
    out = args.out or (Path(args.runs[0]).parent / "compare" if args.runs else Path("runs/compare"))
    rungs = tuple(x.strip() for x in args.rungs.split(",")) if args.rungs else LADDER
    result = compare(args.runs, out, ladder, rungs, progress=not args.quiet)
    print(result.table())
    print(f"wrote {result.html}, {result.markdown}, {result.plot}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from textlora.compare import HEADERS, list_runs
    from textlora.render import text_table

    rows = list_runs(args.dir) if Path(args.dir).is_dir() else None
    if rows is None:
        raise TextloraError(f"folder {args.dir} not found; pass the folder that holds your runs (default: runs).")
    if not rows:
        print(f"no finished runs under {args.dir}")
        return 0
    print(text_table(HEADERS, [r.cells() for r in rows]))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import importlib.util

    from textlora.config import RunConfig, parse_overrides
    from textlora.sweep import build_space, load_space, parse_range, sweep

    if importlib.util.find_spec("optuna") is None:
        raise TextloraError("textlora sweep needs optuna: pip install 'textlora[sweep]' (or pip install optuna).")
    if args.trials < 1:
        raise TextloraError(f"--trials must be at least 1, got {args.trials}.")
    fixed = parse_overrides(args.overrides)
    if args.device:
        fixed["train.device"] = args.device
    cfg = RunConfig.from_yaml(args.config).with_overrides(fixed)
    changes = load_space(args.space) if args.space else {}
    changes.update(dict(parse_range(r) for r in args.range))
    result = sweep(cfg, args.trials, args.out, build_space(cfg, changes), args.storage, args.study_name, args.seed,
                   args.metric, prune=not args.no_prune, progress=not args.quiet)
    print(result.table)
    print(f"best: validation {result.best_value:.4f} with {result.best_params}")
    print(f"wrote {result.folder}/results.md, results.html, sweep.png and {result.best_config}")
    return 0


COMMANDS.update({"report": cmd_report, "compare": cmd_compare, "sweep": cmd_sweep, "runs": cmd_runs})


# ---- audit: k-fold out-of-fold predictions -> label errors, duplicates, balance, cv scores --------------------

def add_audit_command(sub: Any) -> None:
    """`textlora audit --data D --out A`: the config flags of `train` (the recipe of every fold), plus --folds."""
    from textlora.auditing import METHODS

    a = sub.add_parser("audit", help="k-fold audit of the training split: likely label errors, duplicates, class "
                                     "balance, cross-validated scores; writes audit.html and suspects.jsonl")
    a.add_argument("--config", help="YAML run config: the recipe each fold trains with; flags apply on top")
    a.add_argument("--out", required=True, help="audit folder: new, empty, or an earlier audit's (its finished "
                                                "folds are reused)")
    a.add_argument("--folds", type=int, default=5, help="K of the stratified K-fold (default 5)")
    a.add_argument("--method", choices=list(METHODS), default="lora",
                   help="how each fold trains, whatever the config says: lora (default; adapters on the top "
                        "--top-layers layers, the lower ones computed once: on emotion as fast as head and 1.8x its "
                        "precision, bench/RESULTS.md) or head (frozen body)")
    a.add_argument("--top-layers", type=_top_layers, default=argparse.SUPPRESS, metavar="N|all",
                   help="with --method lora: adapters on the top N layers (default 1 unless the config or a "
                        "lora.top_layers=... override says otherwise), all for every layer")
    docs = config_docs()
    for flag, (key, typ) in TRAIN_FLAGS.items():
        if flag not in ("--out", "--method"):
            a.add_argument(flag, type=typ, dest=key.replace(".", "__"), metavar=key.rsplit(".", 1)[-1].upper(),
                           help=_help(docs.get(key, ""), key))
    a.add_argument("--quiet", action="store_true", help="no line per fold")
    a.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.epochs=2 model.max_length=64")


AUDIT_TOP_LAYERS = 1
"""The audit's LoRA folds train adapters on this many top layers unless told otherwise: the lower layers are then
computed once per fold (model/layer_cache.py), so a fold costs about what a head-only fold costs, and on emotion
with 5% flipped labels its top suspects held 1.8x more of the flips (bench/RESULTS.md, session 12)."""


def _top_layers(value: str) -> int | None:
    """`--top-layers`: a positive count, or `all` (every layer: lora.top_layers null)."""
    if value == "all":
        return None
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of layers or 'all', got {value!r}")
    return int(value)


def audit_config(args: argparse.Namespace) -> Any:
    """The fold recipe of `textlora audit`: the config file, the train flags, --method, then key=value overrides;
    LoRA folds get `AUDIT_TOP_LAYERS` unless --top-layers, the config or an override sets lora.top_layers."""
    import yaml

    from textlora.config import RunConfig, parse_overrides

    cfg = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    flags = {key: getattr(args, key.replace(".", "__"), None) for key, _ in TRAIN_FLAGS.values() if key != "out"}
    flags = {k: v for k, v in flags.items() if v is not None and k != "model.method"}
    overrides = parse_overrides(args.overrides)
    in_file = args.config and "top_layers" in ((yaml.safe_load(Path(args.config).read_text()) or {}).get("lora") or {})
    top = args.top_layers if "top_layers" in vars(args) else cfg.lora.top_layers if in_file else AUDIT_TOP_LAYERS
    layers = {"lora.top_layers": top} if args.method == "lora" else {}
    return cfg.with_overrides({**flags, "model.method": args.method, **layers, **overrides})


def cmd_audit(args: argparse.Namespace) -> int:
    from textlora.auditing import audit

    cfg = audit_config(args)
    r = audit(cfg, args.out, folds=args.folds, progress=not args.quiet)
    for s in r.suspects[:10]:
        print(f"{s.rank:>4}  {s.row_name:>12}  {s.given:>12} -> {s.suggested:<12} {s.score:.3f}  {s.text[:70]}")
    print(f"wrote {r.path('html')}, {r.path('suspects')} ({len(r.suspects)} suspects), {r.path('duplicates')}")
    return 0


COMMANDS["audit"] = cmd_audit


def _one_line_warnings() -> None:
    """Show warnings as `warning: MESSAGE`, without the file path and source line Python adds: on the command line
    the message is all a user can act on."""
    import warnings

    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `textlora` console script."""
    _one_line_warnings()
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
