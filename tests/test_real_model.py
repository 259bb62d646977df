"""A few hundred rows on the real embedded MiniLM: the default path works and learns."""

import pytest
from conftest import SHARED

from textlora.config import RunConfig
from textlora.predict import Predictor
from textlora.train import train

EMOTION = SHARED / "emotion"
pytestmark = pytest.mark.skipif(not EMOTION.is_dir(), reason="../shared/datasets/emotion not found")


@pytest.fixture(scope="module")
def emotion_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "run"
    cfg = RunConfig.from_dict({
        "data": {"path": str(EMOTION), "max_train_samples": 480, "max_eval_samples": 200},
        "model": {"max_length": 64, "dropout": 0.0},
        "train": {"epochs": 2, "batch_size": 16},
        "out": str(out),
    })
    return train(cfg, progress=False)


def test_default_model_learns_emotion(emotion_run):
    m = emotion_run.metrics
    assert m["test"]["accuracy"] > m["base"]["test"]["accuracy"] + 0.15
    assert m["test"]["accuracy"] > 0.45


def test_predict_returns_label_names(emotion_run):
    clf = Predictor.load(emotion_run.out)
    assert clf.labels_ == ["anger", "fear", "joy", "love", "sadness", "surprise"]
    assert set(clf.predict(["i feel wonderful today", "this makes me so angry"])) <= set(clf.labels_)
