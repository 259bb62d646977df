"""The page `textlora serve` answers at `GET /`: try the served runs from a browser.

One self-contained HTML document (inline CSS and JS, no CDN, no fonts: it works offline). It lists the
runs of `GET /v1/models`, sends the typed texts (one per line) to `POST /v1/classify`, and draws each
label's score as a bar, highest first, with the decision (the response's `labels`) highlighted. API
errors are shown as their `detail`. Every text reaches the DOM through `textContent`, never as HTML;
`HEADERS` adds a Content-Security-Policy that allows only this page's own inline code and same-origin
requests.
"""

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
"""Response headers of the page: nothing but its own inline code runs, and it talks only to this server."""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>textlora serve</title>
<link rel="icon" href="data:,">
<style>
:root{--fg:#1d232a;--muted:#5b6670;--line:#d8dee4;--bar:#a9bccf;--hi:#1f6feb;--bad:#b42318;
 font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg)}
body{max-width:52rem;margin:2rem auto;padding:0 1rem;line-height:1.4}
h1{font-size:1.4rem;margin:0 0 1rem}
label{display:block;font-weight:600;margin:.9rem 0 .3rem}
select,textarea,button{font:inherit}
select{min-width:16rem;padding:.3rem}
textarea{width:100%;box-sizing:border-box;min-height:7rem;padding:.5rem}
button{margin-top:.6rem;padding:.45rem 1.2rem;background:var(--hi);color:#fff;border:0;border-radius:4px;cursor:pointer}
button:disabled{opacity:.6;cursor:wait}
.info{color:var(--muted);font-size:.9rem;margin:.3rem 0}
#error{color:var(--bad);border-left:3px solid var(--bad);padding:.4rem .7rem;margin:1rem 0;background:#fef3f2;
 white-space:pre-wrap;overflow-wrap:anywhere}
#error:empty{display:none}
.result{border-top:1px solid var(--line);padding:.8rem 0}
.text{margin:0 0 .2rem;white-space:pre-wrap;overflow-wrap:anywhere}
.decision{margin:0 0 .5rem;font-weight:600}
.row{display:grid;grid-template-columns:11rem 1fr 6.5rem;gap:.6rem;align-items:center;margin:.15rem 0;font-size:.92rem}
.name{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.track{position:relative;height:.9rem;background:#eef1f4;border-radius:3px}
.fill{height:100%;background:var(--bar);border-radius:3px}
.tick{position:absolute;top:-.2rem;bottom:-.2rem;width:2px;background:var(--fg)}
.score{text-align:right;font-variant-numeric:tabular-nums}
.chosen .name{font-weight:700;color:var(--hi)}
.chosen .fill{background:var(--hi)}
</style>
</head>
<body>
<main>
<h1>textlora: try a served model</h1>
<label for="model">Model</label>
<select id="model"></select>
<p id="info" class="info"></p>
<label for="texts">Texts, one per line</label>
<textarea id="texts" placeholder="i feel wonderful today"></textarea>
<button id="go" type="button">Classify</button>
<div id="error" role="alert"></div>
<section id="results" aria-live="polite" aria-label="Results"></section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const models = {};

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;  // text, never HTML
  return e;
}

function fmt(x) { return typeof x === "number" ? x.toFixed(3) : "n/a"; }

async function api(path, body) {
  const opts = body === undefined ? {} :
    {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)};
  let r, data = null;
  try { r = await fetch(path, opts); } catch (e) { throw new Error(path + ": no answer from the server (" + e.message + ")"); }
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) throw new Error("HTTP " + r.status + " from " + path + ": " + (data && data.detail ? data.detail : r.statusText));
  if (data === null) throw new Error(path + ": the answer is not JSON");
  return data;
}

function showInfo() {
  const m = models[$("model").value];
  if (!m) { $("info").textContent = ""; return; }
  const parts = [m.method, m.multi_label ? "multi-label" : "single-label", m.labels.length + " labels"];
  for (const split of ["validation", "test"]) parts.push(split + " accuracy " + fmt((m.metrics[split] || {}).accuracy));
  if (m.thresholds) parts.push("thresholds: " + Object.entries(m.thresholds).map(([k, v]) => k + " \u2265 " + fmt(v)).join(", "));
  $("info").textContent = parts.join(" \u00b7 ");
}

function bar(m, name, score, chosen) {
  const row = el("div", chosen ? "row chosen" : "row");
  row.append(el("span", "name", name));
  const track = el("div", "track"), fill = el("div", "fill");
  track.setAttribute("aria-hidden", "true");
  fill.style.width = (100 * score).toFixed(1) + "%";
  track.append(fill);
  const t = m && m.thresholds ? m.thresholds[name] : undefined;
  if (typeof t === "number") {
    const tick = el("div", "tick");
    tick.style.left = (100 * t).toFixed(1) + "%";
    tick.title = "threshold " + fmt(t);
    track.append(tick);
  }
  row.append(track, el("span", "score", fmt(score) + (chosen ? " \u2713" : "")));
  return row;
}

function render(m, texts, predictions) {
  const out = $("results");
  out.replaceChildren();
  predictions.forEach((p, i) => {
    const art = el("article", "result"), chosen = new Set(p.labels);
    art.append(el("p", "text", texts[i]));
    art.append(el("p", "decision", "\u2192 " + (p.labels.length ? p.labels.join(", ") : "no label at or over its threshold")));
    const rows = Object.entries(p.scores).sort((a, b) => b[1] - a[1]);
    for (const [name, score] of rows) art.append(bar(m, name, score, chosen.has(name)));
    out.append(art);
  });
}

async function classify() {
  const name = $("model").value;
  const texts = $("texts").value.split("\n").map((t) => t.replace(/\r$/, "")).filter((t) => t.trim());
  $("error").textContent = "";
  if (!name) { $("error").textContent = "no model to choose: GET /v1/models lists none"; return; }
  if (!texts.length) { $("error").textContent = "type at least one text, one per line"; return; }
  $("go").disabled = true;
  $("results").setAttribute("aria-busy", "true");
  try {
    const data = await api("/v1/classify", {model: name, texts: texts});
    render(models[name], texts, data.predictions);
  } catch (e) {
    $("results").replaceChildren();
    $("error").textContent = e.message;
  } finally {
    $("go").disabled = false;
    $("results").removeAttribute("aria-busy");
  }
}

async function loadModels() {
  try {
    const data = await api("/v1/models");
    for (const m of data.models) {
      models[m.name] = m;
      $("model").append(el("option", "", m.name));
    }
    showInfo();
  } catch (e) {
    $("error").textContent = e.message;
  }
}

$("model").addEventListener("change", showInfo);
$("go").addEventListener("click", classify);
$("texts").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) classify(); });
loadModels();
</script>
</body>
</html>
"""
"""The page itself (about 6 KB)."""
