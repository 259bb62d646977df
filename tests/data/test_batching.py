import pytest

from textlora.data.batching import Encoded, collate, encode, eval_batches, train_batches


def test_train_batches_cover_every_row_once_and_are_seeded():
    lengths = [(i * 7) % 23 + 1 for i in range(200)]
    b = train_batches(lengths, 16, seed=1, epoch=1)
    assert sorted(i for batch in b for i in batch) == list(range(200))
    assert b == train_batches(lengths, 16, seed=1, epoch=1)
    assert b != train_batches(lengths, 16, seed=1, epoch=2)


def test_length_bucketing_cuts_padding():
    lengths = [(i * 7) % 23 + 1 for i in range(2048)]
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in train_batches(lengths, 32, 0, 1))
    assert padded < 1.1 * sum(lengths)


def test_eval_batches_respect_token_budget():
    lengths = [100] * 10 + [5] * 10
    for batch in eval_batches(lengths, batch_size=8, max_tokens=300):
        assert len(batch) * max(lengths[i] for i in batch) <= 300 or len(batch) == 1


def test_collate_pads_right_with_mask():
    enc = Encoded([[5, 6, 7], [8]])
    out = collate(enc, [0, 1], pad_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


LONG = "good " + " ".join(["table"] * 20) + " bad"


@pytest.fixture(scope="module")
def bert_tok(tmp_path_factory):
    from conftest import _bert_tokenizer

    return _bert_tokenizer(tmp_path_factory.mktemp("tok"))


def test_head_truncation_is_the_tokenizers_own(bert_tok):
    want = bert_tok([LONG], truncation=True, max_length=10)["input_ids"]
    assert encode(bert_tok, [LONG], 10).input_ids == want


@pytest.mark.parametrize("mode, head", [("tail", 0), ("head+tail", 2)])
def test_tail_and_head_tail_keep_the_end_inside_the_special_tokens(bert_tok, mode, head):
    body = bert_tok([LONG], add_special_tokens=False)["input_ids"][0]
    ids = encode(bert_tok, [LONG, "good day"], 10, mode).input_ids
    assert ids[0] == [bert_tok.cls_token_id] + body[:head] + body[-(8 - head):] + [bert_tok.sep_token_id]
    assert ids[1] == bert_tok(["good day"])["input_ids"][0]  # a text that fits is left whole


def test_truncation_without_special_tokens(tiny_models):
    from textlora.model.load import load_tokenizer

    tok = load_tokenizer(str(tiny_models["gpt2"]))
    body = tok([LONG], add_special_tokens=False)["input_ids"][0]
    assert encode(tok, [LONG], 8, "head+tail").input_ids == [body[:2] + body[-6:]]
