#!/usr/bin/env bash
# The comparisons beside the sampler step (tools/bench-vs-pytorch.sh): one `train diffusion`
# step at batch 16, NPNet's forward at the authors' SDXL size (swin_tiny) and the SVD of 256x256
# matrices, our CPU backend against PyTorch (tools/pytorch_side.py, 2 threads each) in
# alternating rounds; prints the medians and the ratio ours / PyTorch (below 1: we are faster).
# Also NoiseAR's KV-cached SDXL-size sampling against its bandwidth floor (ours only).
#
#   tools/bench-more-vs-pytorch.sh PYTHON [ROUNDS]
#
# PYTHON is an interpreter with torch, timm, diffusers, transformers and safetensors (a venv made
# for measuring; never needed by the tests or CI). Default: 3 rounds.
set -euo pipefail
py="${1:?usage: tools/bench-more-vs-pytorch.sh PYTHON [ROUNDS]}"
rounds="${2:-3}"
source "$(dirname "$0")/pytorch-common.sh"
pytorch_setup bench-more-vs-pytorch "$py" "torch timm diffusers transformers safetensors"
for r in $(seq 1 "$rounds"); do
    "$py" "$root/tools/pytorch_side.py" train "$model" 16 > "$out/torch-train-$r.json"
    "$bin" bench train --batch 16 --device cpu --no-reference --json --warmup 1 --repeats 5 > "$out/ours-train-$r.json" 2>/dev/null
    "$py" "$root/tools/pytorch_side.py" npnet 1 > "$out/torch-npnet-$r.json"
    "$bin" bench npnet --batch 1 --device cpu --no-reference --json --warmup 1 --repeats 5 > "$out/ours-npnet-$r.json" 2>/dev/null
    "$py" "$root/tools/pytorch_side.py" svd 256 4 > "$out/torch-svd-$r.json"
    "$bin" bench svd --size 256 --batch 4 --device cpu --no-reference --json --warmup 1 --repeats 5 > "$out/ours-svd-$r.json" 2>/dev/null
    echo "round $r of $rounds done" >&2
done
"$bin" bench noisear --device cpu --no-reference --json --warmup 1 --repeats 3 > "$out/ours-noisear.json" 2>/dev/null
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def med(name, key, pick=lambda rows: rows[0]):
    vals = []
    for r in range(1, rounds + 1):
        d = json.load(open(f"{out}/{name}-{r}.json"))
        vals.append((pick(d) if isinstance(d, list) else d)[key])
    return statistics.median(vals)
print(f"medians over {rounds} alternating rounds (ms; SVD in ms per matrix)")
print(f"{'comparison':<34} {'PyTorch':>9} {'ours':>9} {'ours/PyTorch':>13}")
rows = [("training step, batch 16", med("torch-train", "median_ms"), med("ours-train", "medianMs")),
        ("NPNet forward, SDXL size, swin_tiny", med("torch-npnet", "median_ms"), med("ours-npnet", "medianMs")),
        ("SVD 256x256 (batch 4)", med("torch-svd", "ms_per_matrix"), med("ours-svd", "msPerMatrix"))]
for name, t, o in rows:
    print(f"{name:<34} {t:>9.1f} {o:>9.1f} {o / t:>12.2f}x")
na = {r["variant"]: r["medianMs"] for r in json.load(open(f"{out}/ours-noisear.json"))}
floor, cached = na["bandwidth floor"], na["kv-cached"]
print(f"NoiseAR SDXL-size KV-cached sampling: {cached:.0f} ms, bandwidth floor {floor:.0f} ms: {cached / floor:.2f}x the floor")
PY
