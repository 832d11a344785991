#!/usr/bin/env bash
# The guided sampler step of the shipped shapes-world model, our CPU backend against PyTorch
# (diffusers' UNet2DConditionModel + transformers' CLIPTextModel built from the same file by
# ../shared/tools/pytorch_reference.py), in alternating rounds; prints the medians and the ratio
# ours / PyTorch per batch (below 1: we are faster).
#
#   tools/bench-vs-pytorch.sh PYTHON [ROUNDS] [BATCHES] [DEVICE]
#
# PYTHON is an interpreter with torch, diffusers, transformers and safetensors (a venv made for
# measuring; never needed by the tests or CI). Defaults: 3 rounds, batches 1,4,8, device cpu.
set -euo pipefail
py="${1:?usage: tools/bench-vs-pytorch.sh PYTHON [ROUNDS] [BATCHES] [DEVICE]}"
rounds="${2:-3}"
batches="${3:-1,4,8}"
device="${4:-cpu}"
source "$(dirname "$0")/pytorch-common.sh"
pytorch_setup bench-vs-pytorch "$py" "torch diffusers transformers safetensors"
for r in $(seq 1 "$rounds"); do
    "$py" "$ref" "$model" time "$batches" > "$out/torch-$r.json"
    for b in ${batches//,/ }; do
        "$bin" bench sampler --batch "$b" --device "$device" --no-reference --json --warmup 2 --repeats 10 \
            > "$out/ours-$r-$b.json" 2>/dev/null
    done
    echo "round $r of $rounds done" >&2
done
python3 - "$out" "$rounds" "$batches" "$device" <<'PY'
import json, statistics, sys
out, rounds, batches, device = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4]
print(f"guided sampler step (one UNet call on 2B images with CFG), medians over {rounds} alternating rounds")
print(f"{'images':>6} {'PyTorch ms':>11} {device + ' ms':>11} {'ours/PyTorch':>13}")
for b in batches:
    torch_ms = statistics.median(json.load(open(f"{out}/torch-{r}.json"))[b]["median_ms"] for r in range(1, rounds + 1))
    ours_ms = statistics.median(json.load(open(f"{out}/ours-{r}-{b}.json"))[0]["medianMs"] for r in range(1, rounds + 1))
    print(f"{b:>6} {torch_ms:>11.1f} {ours_ms:>11.1f} {ours_ms / torch_ms:>12.2f}x")
PY
