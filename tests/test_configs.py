"""Every experiment config in configs/ parses strictly and points at a dataset that exists."""

from pathlib import Path

import pytest

from textlora.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_every_seed_experiment_has_a_config():
    names = {p.stem for p in CONFIGS}
    assert {"s1_emotion_lora", "s2_goemotions_full", "s2_goemotions_lora", "s2_dbpedia_lora", "s3_imdb_1000",
            "s3_imdb_full", "s4_emotion_head", "s4_emotion_lora", "s4_emotion_qlora",
            "s5_emotion_base_vs_lora"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_parses_and_its_data_exists(path):
    cfg = RunConfig.from_yaml(path)  # strict: an unknown key fails
    assert cfg.data.path.startswith("../shared/datasets/")
    assert cfg.out == f"runs/{path.stem}"
    assert path.read_text(encoding="utf-8").startswith("# S")  # says which experiment it reproduces
    data = REPO / cfg.data.path
    if not (REPO.parent / "shared" / "datasets").is_dir():
        pytest.skip("../shared/datasets is not here")
    assert data.is_dir() and any(data.glob("train.*")), f"{path.name}: {data} has no train file"
