"""The page `textlora serve` answers at `/`: served as one self-contained document, then driven in headless
Chromium against the real server (a single-label and a multi-label tiny run): type texts, click, and compare
what the page shows with what `POST /v1/classify` answers."""

import json
import os
from pathlib import Path

import httpx
import pytest
from browser import find_chromium, inspect_page
from conftest import make_rows, serve_process, tiny_config, write_jsonl
from test_multilabel import multilabel_rows

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

MAX_CHARS = 60
TEXTS = ["good happy day", "the awful chair", "window and a door", "love it !", "sad wall awful"]
XSS = '<img src=x onerror="window.pwned=1"><b>bold</b>'
needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (apt-get install "
                                                                    "chromium; .ci/run installs it)")


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """A single-label LoRA run ('emotion') and a multi-label run ('tags') on the tiny BERT."""
    from textlora.train import train

    root = tmp_path_factory.mktemp("page")
    for split, n, seed in (("train", 60, 1), ("validation", 15, 2), ("test", 15, 3)):
        write_jsonl(root / "single" / f"{split}.jsonl", make_rows(n, seed=seed))
    for split, n, seed in (("train", 100, 1), ("validation", 40, 2), ("test", 40, 3)):
        write_jsonl(root / "multi" / f"{split}.jsonl", multilabel_rows(n, seed))
    train(tiny_config(root / "single", tiny_models["bert"], root / "emotion", epochs=1), progress=False)
    cfg = tiny_config(root / "multi", tiny_models["bert"], root / "tags", epochs=3)
    train(cfg.with_overrides({"data.label_column": "labels"}), progress=False)
    return {"emotion": root / "emotion", "tags": root / "tags"}


@pytest.fixture(scope="module")
def server(runs):
    """`textlora serve` as a subprocess on 127.0.0.1; yields its base URL."""
    with serve_process([f"{n}={p}" for n, p in runs.items()], "--max-chars", str(MAX_CHARS)) as (url, _):
        yield url


def _classify(url: str, model: str, texts: list[str]) -> httpx.Response:
    return httpx.post(url + "/v1/classify", json={"model": model, "texts": texts}, timeout=30)


def test_page_is_one_small_offline_document_outside_the_schema(server):
    r = httpx.get(server + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert len(r.content) < 10_000
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    assert "http://" not in r.text and "https://" not in r.text and 'src="' not in r.text  # no CDN, no fonts
    head = httpx.head(server + "/")
    assert head.status_code == 200 and head.content == b""
    assert "/" not in httpx.get(server + "/openapi.json").json()["paths"]
    counts = httpx.get(server + "/metrics").text
    assert 'textlora_requests_total{path="/",status="200"}' in counts
    assert 'path="other"' not in counts


def test_models_give_a_multilabel_runs_thresholds(server, runs):
    models = {m["name"]: m for m in httpx.get(server + "/v1/models").json()["models"]}
    assert models["emotion"]["thresholds"] is None
    saved = json.loads((runs["tags"] / "thresholds.json").read_text())
    assert models["tags"]["thresholds"] == pytest.approx({n: saved.get(n, 0.5) for n in models["tags"]["labels"]})


DRIVE = """(async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const until = async (f) => { for (let i = 0; i < 600 && !f(); i++) await sleep(50); return !!f(); };
  const q = (s, root) => [...(root || document).querySelectorAll(s)];
  if (!await until(() => q('#model option').length)) return {timeout: 'models'};
  const select = document.getElementById('model');
  select.value = MODEL;
  select.dispatchEvent(new Event('change'));
  document.getElementById('texts').value = TEXTS.join('\\n');
  document.getElementById('go').click();
  const error = document.getElementById('error');
  if (!await until(() => q('#results .result').length || error.textContent)) return {timeout: 'results'};
  return {
    options: q('#model option').map((o) => o.textContent), info: document.getElementById('info').textContent,
    error: error.textContent, images: q('img').length, bold: q('b').length, pwned: window.pwned === 1,
    results: q('#results .result').map((a) => ({
      text: a.querySelector('.text').textContent,
      chosen: q('.row.chosen .name', a).map((e) => e.textContent),
      names: q('.row .name', a).map((e) => e.textContent),
      scores: q('.row .score', a).map((e) => parseFloat(e.textContent)),
    })),
  };
})()"""


def _drive(url: str, model: str, texts: list[str], screenshot: Path | None = None):
    expression = DRIVE.replace("MODEL", json.dumps(model)).replace("TEXTS", json.dumps(texts))
    return inspect_page(url + "/", expression, screenshot=screenshot, height=1200)


@needs_chromium
def test_page_shows_the_apis_label_and_every_score(server, tmp_path):
    texts = [*TEXTS, XSS]
    api = _classify(server, "emotion", texts).json()["predictions"]
    shot = Path(os.environ.get("TEXTLORA_SCREENSHOT", tmp_path / "page.png"))
    result = _drive(server, "emotion", texts, screenshot=shot)
    assert result.errors == []
    page = result.value
    assert page["options"] == ["emotion", "tags"] and page["error"] == ""
    assert "validation accuracy" in page["info"] and "test accuracy" in page["info"]
    assert [r["text"] for r in page["results"]] == texts  # the markup came out as text
    assert page["images"] == 0 and page["bold"] == 0 and not page["pwned"]
    for shown, p in zip(page["results"], api):
        assert shown["chosen"] == [p["label"]]
        assert sorted(shown["names"]) == sorted(p["scores"])  # a bar for every label
        assert shown["scores"] == sorted(shown["scores"], reverse=True)
        assert shown["scores"] == pytest.approx([p["scores"][n] for n in shown["names"]], abs=5e-4)


@needs_chromium
def test_page_highlights_a_multilabel_runs_labels(server):
    api = _classify(server, "tags", TEXTS).json()["predictions"]
    result = _drive(server, "tags", TEXTS)
    assert result.errors == []
    page = result.value
    assert "thresholds:" in page["info"]
    for shown, p in zip(page["results"], api, strict=True):
        assert sorted(shown["chosen"]) == sorted(p["labels"])
        assert sorted(shown["names"]) == sorted(p["scores"])


@needs_chromium
def test_page_shows_the_apis_error(server):
    too_long = "good " * (MAX_CHARS // 4)
    r = _classify(server, "emotion", [too_long])
    assert r.status_code == 422
    result = _drive(server, "emotion", [too_long])
    page = result.value
    assert page["error"] == f"HTTP 422 from /v1/classify: {r.json()['detail']}" and page["results"] == []
    # Chromium logs the failed fetch itself as a console error; the page adds none of its own
    assert all("422" in e for e in result.errors)


@needs_chromium
def test_page_asks_for_a_text_before_calling_the_api(server):
    def classify_counts() -> list[str]:
        return [line for line in httpx.get(server + "/metrics").text.splitlines()
                if line.startswith('textlora_requests_total{path="/v1/classify"')]

    before = classify_counts()
    result = _drive(server, "emotion", ["", "   "])
    assert result.errors == []
    assert result.value["error"] == "type at least one text, one per line" and result.value["results"] == []
    assert classify_counts() == before
