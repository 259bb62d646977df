"""Where each concept lives: lines per module and how many places do one job, for a source tree. One JSON line.

    python bench/structure.py                      # this checkout's src/textlora
    python bench/structure.py --src OTHER/src/textlora

Counted with plain regular expressions over the source (comments and docstrings included, so a few hits may be
prose; the same rules before and after make the numbers comparable):
- `run_file_literals`: string literals naming a run folder's files ("manifest.json", "metrics.json", ...) per module;
- `run_folder_readers`: modules that read a run folder's files themselves (a run file's literal and a read call);
- `label_kind_branches`: lines that branch on single- vs multi-label (`if`/`else` expressions over `multi`);
- `batched_forward_loops`: lines that take a batch's logits off the model inside an inference loop.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

RUN_FILES = ("manifest.json", "metrics.json", "config.yaml", "labels.json", "thresholds.json", "predictions.npz",
             "loss_log.jsonl", "head.safetensors", "adapter_config.json")
LITERAL = re.compile("[\"'](" + "|".join(re.escape(f) for f in RUN_FILES) + ")[\"']")
READ = re.compile(r"read_json|from_yaml|LabelMap\.load|np\.load|load_file|read_text|json\.load")
BRANCH = re.compile(r"\b(if|elif|else)\b.*\bmulti(_label)?\b|\bmulti(_label)?\b.*\bif\b.*\belse\b")
FORWARD = re.compile(r"\.logits\.float\(\)\.(cpu\(\)\.)?numpy\(\)")


def count(src: Path) -> dict:
    """The counts of one source tree (see the module docstring)."""
    lines, literals, readers, branches, forwards = {}, {}, [], {}, {}
    for path in sorted(src.rglob("*.py")):
        name = str(path.relative_to(src))
        text = path.read_text(encoding="utf-8")
        rows = text.splitlines()
        lines[name] = len(rows)
        if n := len(LITERAL.findall(text)):
            literals[name] = n
        if name != "run_folder.py" and LITERAL.search(text) and READ.search(text):
            readers.append(name)
        if n := sum(bool(BRANCH.search(r)) for r in rows):
            branches[name] = n
        if n := sum(bool(FORWARD.search(r)) for r in rows):
            forwards[name] = n
    return {"modules": len(lines), "lines": sum(lines.values()), "lines_per_module": lines,
            "run_file_literals": literals, "run_file_literals_outside_run_folder":
                sum(v for k, v in literals.items() if k != "run_folder.py"),
            "run_folder_readers": readers, "label_kind_branches": branches,
            "label_kind_branches_total": sum(branches.values()), "label_kind_modules": len(branches),
            "batched_forward_loops": forwards, "batched_forward_loops_total": sum(forwards.values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src" / "textlora"))
    args = p.parse_args()
    print(json.dumps({"bench": "structure", "src": args.src, **count(Path(args.src))}))


if __name__ == "__main__":
    main()
