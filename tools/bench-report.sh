#!/usr/bin/env bash
# Runs the benchmarks the project tracks and prints them side by side (CPU backend / OpenBLAS
# reference first, then the selected device). Usage: tools/bench-report.sh [DEVICE] [BINARY]
set -euo pipefail
device="${1:-opencl}"
bin="${2:-.build/release/noisear-gpu}"
if [ ! -x "$bin" ]; then
    echo "building $bin" >&2
    swift build -c release >&2
fi
"$bin" devices
echo
"$bin" bench gemm --device "$device" --size 1024 --repeats 10
echo
"$bin" bench attention --device "$device" --batch 4 --heads 8 --tq 256 --tk 256 --dim 64 --repeats 5
echo
"$bin" bench conv2d --device "$device" --batch 4 --channels 64 --out-channels 64 --size 32 --kernel 3 --repeats 5
echo
"$bin" bench layernorm --device "$device" --rows 4096 --size 1024 --repeats 10
echo
"$bin" bench softmax --device "$device" --rows 4096 --size 1024 --repeats 10
