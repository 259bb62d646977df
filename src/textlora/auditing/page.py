"""The audit's self-contained HTML page (`audit.html`): scores, suspects, duplicates, balance, lengths."""

from __future__ import annotations

import html
from typing import Any

from textlora.render import Raw, fmt, html_page, html_table

SHOWN = 100
"""Rows of the suspect and duplicate tables on the page (the JSONL files hold them all)."""


def render_page(r: Any) -> str:
    """The page of an `AuditResult`."""
    sections = [("Cross-validated scores", _cv(r)), ("Suspected label errors", _suspects(r)),
                ("Duplicated texts", _duplicates(r)), ("Class balance", _balance(r)),
                ("Text length", _lengths(r))]
    if r.notes:
        sections.insert(0, ("", "".join(f"<p class=\"muted\">{html.escape(n)}</p>" for n in r.notes)))
    return html_page("textlora audit", sections, subtitle=f"{len(r.quality):,} training rows, {len(r.folds)} folds")


def _cv(r: Any) -> str:
    rows = [[f"fold {f.fold}", f.rows, f.accuracy, f.f1_macro, f.best_epoch, fmt(f.train_seconds, 1),
             "reused" if f.reused else "trained"] for f in r.folds]
    c = r.cv
    rows.append(["mean ± std", sum(f.rows for f in r.folds), f"{c['accuracy_mean']:.4f} ± {c['accuracy_std']:.4f}",
                 f"{c['f1_macro_mean']:.4f} ± {c['f1_macro_std']:.4f}", "", "", ""])
    return (html_table(["fold", "held-out rows", "accuracy", "macro-F1", "best epoch", "train s", ""], rows,
                       table_id="cv")
            + "<p>Each fold trains on the other folds, picks its best epoch on the validation split, then scores its "
              "held-out rows. Standard deviation over folds (ddof 1).</p>")


def _suspects(r: Any) -> str:
    rows = [[s.rank, s.row_name, Raw(f"<span>{html.escape(s.text)}</span>"), s.given, s.suggested, s.score,
             s.p_suggested] for s in r.suspects[:SHOWN]]
    head = (f"<p>{len(r.suspects):,} rows ({len(r.suspects) / max(len(r.quality), 1):.1%} of train) flagged by "
            "confident learning (cleanlab), most suspect first; score: the out-of-fold probability of the given "
            f"label. All of them are in suspects.jsonl{'; the first ' + str(SHOWN) + ' here' if len(r.suspects) > SHOWN else ''}.</p>")
    return head + html_table(["#", "row", "text", "given", "suggested", "score", "p(suggested)"], rows,
                             table_id="suspects", cls="examples")


def _duplicates(r: Any) -> str:
    from textlora.auditing.checks import duplicate_counts

    counts = duplicate_counts(r.duplicates)
    if not counts:
        return "<p>No text occurs twice (after collapsing whitespace and ignoring case).</p>"
    summary = html_table(["kind", "groups", "extra rows", "groups with conflicting labels"],
                         [[k, v["groups"], v["extra_rows"], v["conflicting_groups"]] for k, v in counts.items()],
                         table_id="duplicate-counts")
    rows = [[Raw(f"<span>{html.escape(d.text)}</span>"), d.kind, "yes" if d.conflicting else "",
             "; ".join(f"{x['split']} {x['row_name']}: {x['label']}" for x in d.rows)] for d in r.duplicates[:SHOWN]]
    return (summary + "<p>Texts equal after collapsing whitespace and ignoring case; conflicting labels first. All "
            "groups are in duplicates.jsonl.</p>"
            + html_table(["text", "where", "conflict", "rows"], rows, table_id="duplicates", cls="examples"))


def _balance(r: Any) -> str:
    splits = list(r.stats)
    rows = [[name] + [f"{r.stats[s]['classes'][name]['count']:,} ({r.stats[s]['classes'][name]['share']:.1%})"
                      for s in splits] for name in r.labels]
    rows.append(["largest / smallest class"] + [fmt(r.stats[s]["imbalance_ratio"], 2) for s in splits])
    return html_table(["class"] + [f"{s} ({r.stats[s]['rows']:,})" for s in splits], rows, table_id="balance")


def _lengths(r: Any) -> str:
    rows = [[f"{s} {unit}", *(fmt(r.stats[s][unit][k], 1) for k in ("mean", "median", "p95", "max"))]
            for s in r.stats for unit in ("chars", "words")]
    return html_table(["split", "mean", "median", "95th pct", "max"], rows, table_id="lengths")
