"""Bytes of the embedded MiniLM's weights in memory, fp32 (lora/full/head) vs NF4 (qlora).

    python bench/weight_bytes.py        # seconds

Sums parameters and buffers of the loaded sequence classifier; prints one JSON line.
"""

from __future__ import annotations

import json


def main() -> None:
    from textlora.data.labels import LabelMap
    from textlora.model.load import load_base
    from textlora.model.quantization import quantization_config

    labels = LabelMap([str(i) for i in range(6)])
    out = {}
    for method in ("lora", "qlora"):
        model = load_base("embedded", labels, quantization_config=quantization_config(method)).model
        tensors = list(model.parameters()) + list(model.buffers())
        emb = [p for n, p in model.named_parameters() if "embeddings" in n]
        out[method] = {"weights_mb": round(sum(t.numel() * t.element_size() for t in tensors) / 2**20, 1),
                       "embeddings_mb": round(sum(p.numel() * p.element_size() for p in emb) / 2**20, 1)}
    print(json.dumps({"bench": "weight_bytes", "base": "embedded all-MiniLM-L6-v2", "methods": out}))


if __name__ == "__main__":
    main()
