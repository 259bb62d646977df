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


def _byte_level_tokenizer():
    """A RoBERTa-style byte-level BPE (offsets trimmed of spaces), trained in-process on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["the good table was so nice", "i hate this awful chair", "a wonderful window and a door"] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", 1), ("<s>", 0), trim_offsets=True)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _long_texts(words: int = 4000) -> dict[str, str]:
    import random

    from conftest import FILLER, WORDS

    rng = random.Random(0)
    vocab = FILLER + [w for ws in WORDS.values() for w in ws] + ["wonderfully", "tablechairdoor", "é", "!?"]
    seps = [" ", " ", " ", "  ", "\n", " \n ", ", ", ". "]
    prose = "".join(rng.choice(vocab) + rng.choice(seps) for _ in range(words))
    return {
        "prose": prose,
        "spaced": "".join(rng.choice(vocab) + " " * rng.randint(1, 80) for _ in range(words)),  # window grows
        "no spaces": "-".join(rng.choice(vocab) for _ in range(words)),  # nothing to cut at: the whole text
    }


@pytest.mark.parametrize("truncation", ["head", "tail", "head+tail"])
@pytest.mark.parametrize("kind", ["bert", "gpt2", "byte-level"])
def test_cutting_long_texts_by_characters_never_changes_the_ids(tiny_models, monkeypatch, kind, truncation):
    from textlora.data import batching
    from textlora.model.load import load_tokenizer

    tok = _byte_level_tokenizer() if kind == "byte-level" else load_tokenizer(str(tiny_models[kind]))
    texts = list(_long_texts().values())
    for max_length in (16, 64):
        cut = encode(tok, texts, max_length, truncation).input_ids
        monkeypatch.setattr(batching, "CHARS_PER_TOKEN", 10**9)  # no cut
        whole = encode(tok, texts, max_length, truncation).input_ids
        monkeypatch.undo()
        assert cut == whole


@pytest.mark.parametrize("truncation", ["head", "tail", "head+tail"])
def test_a_huge_row_is_cut_before_tokenizing(bert_tok, truncation):
    """Before, a 50 MB row was tokenized whole (47 s, 6.8 GB) and truncated afterwards."""
    from textlora.data.batching import CHARS_PER_TOKEN

    seen = []

    class Spy:
        is_fast = True

        def __call__(self, texts, **kwargs):
            seen.append(max(len(t) for t in ([texts] if isinstance(texts, str) else texts)))
            return bert_tok(texts, **kwargs)

    huge = _long_texts(words=200_000)["prose"]  # ~1.3 M characters
    ids = encode(Spy(), [huge], 32, truncation).input_ids
    assert len(ids[0]) == 32
    assert max(seen) <= 2 * 32 * CHARS_PER_TOKEN + 1
