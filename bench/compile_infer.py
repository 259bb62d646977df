"""Does torch.compile speed up inference? Eager vs `torch.compile(dynamic=True)` with inductor freezing.

    python bench/compile_infer.py --run runs/emotion-lora       # ~3 minutes, most of it compiling

The 2000 emotion test texts in textlora's length-sorted batches of 128, the last layer for [CLS] only,
both ways on the same merged model. Prints one JSON line: examples/s of each, the compile time
(the first pass), and the largest logit difference.
"""

from __future__ import annotations

import argparse
import json
import os
import time

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "emotion")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--data", default=SHARED)
    args = p.parse_args()

    import torch
    import torch._inductor.config as inductor

    from textlora.config import DataConfig
    from textlora.data.batching import encode, eval_batches, iterate
    from textlora.data.splits import load_dataset
    from textlora.model.cls_only import cls_only_last_layer
    from textlora.predict import Predictor

    clf = Predictor.load(args.run)
    texts = load_dataset(DataConfig(path=args.data)).test.texts
    enc = encode(clf.tokenizer, texts, clf.config.model.max_length)
    batches = list(iterate(enc, eval_batches(enc.lengths, 128), clf.tokenizer.pad_token_id))
    model = clf.model.eval()

    def timed(fn) -> tuple[float, torch.Tensor]:
        t = time.perf_counter()
        logits = torch.cat([fn(**inputs).logits for _, inputs in batches])
        return time.perf_counter() - t, logits

    with torch.inference_mode(), cls_only_last_layer(model):
        timed(model)  # warm-up
        eager_s, ref = timed(model)
        inductor.freezing = True  # constant weights folded and prepacked for oneDNN
        compiled = torch.compile(model, dynamic=True)
        compile_s, _ = timed(compiled)
        compiled_s, out = timed(compiled)
    print(json.dumps({"bench": "compile_infer", "texts": len(texts), "run": args.run,
                      "eager_examples_per_s": round(len(texts) / eager_s, 1),
                      "compiled_examples_per_s": round(len(texts) / compiled_s, 1),
                      "speedup": round(eager_s / compiled_s, 2), "first_pass_with_compile_s": round(compile_s, 1),
                      "max_abs_logit_diff": float((out - ref).abs().max()),
                      "label_agreement": float((out.argmax(1) == ref.argmax(1)).float().mean())}))


if __name__ == "__main__":
    main()
