from textlora.data.batching import Encoded, collate, eval_batches, train_batches


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
