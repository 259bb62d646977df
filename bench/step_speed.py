"""Training-step throughput of single design choices, one at a time, on the embedded MiniLM.

    python bench/step_speed.py                 # ~2 minutes

A fixed batch (32 texts x 24 tokens, the emotion average) runs forward + backward + AdamW step
for each variant; everything else equal. Prints one JSON line of examples/s per variant and the
fp32 matmul peak measured in the same run.
"""

from __future__ import annotations

import json
import time

import torch

VARIANTS = {
    "lora_all_linear_no_dropout (default)": dict(method="lora", dropout=0.0, lora_dropout=0.0),
    "lora_all_linear_no_dropout_every_position_in_last_layer": dict(method="lora", dropout=0.0, lora_dropout=0.0,
                                                                    cls_only=False),
    "lora_all_linear_model_dropout_0.1": dict(method="lora", dropout=None, lora_dropout=0.0),
    "lora_all_linear_dropout_0.1_both": dict(method="lora", dropout=None, lora_dropout=0.1),
    "lora_query_value_dropout_0.1_both (peer's)": dict(method="lora", dropout=None, lora_dropout=0.1,
                                                        targets=["query", "value"]),
    "lora_eager_attention": dict(method="lora", dropout=0.0, lora_dropout=0.0, attn="eager"),
    "full_no_dropout": dict(method="full", dropout=0.0, lora_dropout=0.0),
    "head_no_dropout": dict(method="head", dropout=0.0, lora_dropout=0.0),
    "lora_all_linear_torch_compile": dict(method="lora", dropout=0.0, lora_dropout=0.0, compile_=True),
    "lora_bf16 (train.precision=bf16: attention fp32)": dict(method="lora", dropout=0.0, lora_dropout=0.0,
                                                             precision="bf16"),
    "lora_bf16_attention_bf16_too": dict(method="lora", dropout=0.0, lora_dropout=0.0, precision="bf16",
                                         fp32_attention=False),
}


def step_rate(method: str, dropout: float | None, lora_dropout: float, targets: list[str] | None = None,
              attn: str = "sdpa", batch: int = 32, tokens: int = 24, steps: int = 8, compile_: bool = False,
              cls_only: bool = True, precision: str = "fp32", fp32_attention: bool = True) -> float:
    """Examples per second of full training steps for one variant (after 2 warm-up steps, which include
    torch.compile's compilation when `compile_`); `precision` 'bf16' autocasts the forward as textlora.train
    does, with CPU attention in fp32 unless `fp32_attention` is False."""
    from textlora.config import LoraConfig
    from textlora.data.labels import LabelMap
    from textlora.model.adapters import build_model
    from textlora.model.cls_only import cls_only_last_layer
    from textlora.model.load import load_base
    from textlora.model.precision import autocast, cpu_fp32_attention

    torch.manual_seed(0)
    base = load_base("embedded", LabelMap([str(i) for i in range(6)]), attn, dropout=dropout)
    model = build_model(base.model, method, LoraConfig(r=16, alpha=32, dropout=lora_dropout,
                                                       target_modules=targets), base.new_modules).train()
    x = torch.randint(1000, 5000, (batch, tokens))
    mask, y = torch.ones_like(x), torch.randint(0, 6, (batch,))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    forward = torch.compile(model, dynamic=True) if compile_ else model
    attention = cpu_fp32_attention(model, precision if fp32_attention else "fp32")
    with cls_only_last_layer(model, enabled=cls_only), attention:  # as textlora.train does
        for i in range(steps + 2):
            if i == 2:
                t = time.perf_counter()
            with autocast(model, precision):
                logits = forward(input_ids=x, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(30):
        a @ b
    peak = 2 * 1024**3 * 30 / (time.perf_counter() - t) / 1e9
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", metavar="WORD", help="run the variants whose name contains one of these")
    p.add_argument("--tokens", type=int, default=24, help="tokens per text (emotion's average is 24)")
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    chosen = {n: kw for n, kw in VARIANTS.items() if not args.only or any(w in n for w in args.only)}
    rates = {name: round(step_rate(**kw, batch=args.batch, tokens=args.tokens), 1) for name, kw in chosen.items()}
    print(json.dumps({"bench": "step_speed", "batch": args.batch, "tokens": args.tokens, "threads": torch.get_num_threads(),
                      "matmul_peak_gflops": round(peak, 1), "train_examples_per_s": rates}))


if __name__ == "__main__":
    main()
