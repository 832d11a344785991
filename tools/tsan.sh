#!/usr/bin/env bash
# The C API test (Tests/capi/test_capi.c: every entry point, two contexts on two threads) under
# ThreadSanitizer, against a libnoisear.so built with ThreadSanitizer too (in .build/tsan; an
# uninstrumented library hides its lock-free synchronisation from the sanitizer). Part of the
# README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures=${NOISEAR_FIXTURES:-../shared/fixtures}
[ -d "$fixtures/pth" ] || { echo "tsan: reference fixtures not found at $fixtures (set NOISEAR_FIXTURES)" >&2; exit 1; }
echo "tsan: building libnoisear.so with -sanitize=thread (.build/tsan)"
swift build -c release --sanitize=thread --scratch-path .build/tsan --product noisear >.build/tsan-build.log 2>&1 \
    || { tail -30 .build/tsan-build.log; exit 1; }
lib=$(cd .build/tsan/release && pwd)
swiftlib=$(dirname "$(dirname "$(command -v swift)")")/lib/swift/linux
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The toolchain's clang, so the sanitizer runtime is the one the library was built against.
clang -std=c11 -O1 -g -fsanitize=thread -I include Tests/capi/test_capi.c -o "$work/test_capi_tsan" \
    -L "$lib" -lnoisear -L "$swiftlib" -ldispatch -lBlocksRuntime -lpthread -lm -Wl,-rpath,"$lib" -Wl,-rpath,"$swiftlib"
# The test's inputs: the NoiseAR and NPNet fixtures' tensors as raw float32, and their shapes.
python3 - "$fixtures" "$work" <<'PY'
import json, struct, sys
import numpy as np
fixtures, work = sys.argv[1], sys.argv[2]
def tensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    kinds = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64}
    out = {}
    for name, info in header.items():
        if name != "__metadata__":
            a, b = info["data_offsets"]
            out[name] = np.frombuffer(data[8 + n + a:8 + n + b], dtype=kinds[info["dtype"]]).reshape(info["shape"])
    return out
nf = tensors(f"{fixtures}/noisear/noisear_tiny.safetensors")
pf = tensors(f"{fixtures}/npnet/npnet_tiny.safetensors")
for name, t in [("noisear_embeds", nf["input.text_emb"]), ("noisear_eps", nf["input.sample_eps"]),
                ("noisear_noise", nf["input.noise"]), ("npnet_noise", pf["input.noise"]),
                ("npnet_embeds", pf["input.prompt_embeds"])]:
    t.astype(np.float32).tofile(f"{work}/{name}.f32")
dims = list(nf["input.text_emb"].shape) + list(pf["input.prompt_embeds"].shape)
open(f"{work}/dims.txt", "w").write(" ".join(map(str, dims)))
# The 4-head prior's weights without their config, alone and beside a config.json.
import os
h4 = tensors(f"{fixtures}/noisear/noisear_heads4_layers2.safetensors")
weights = {k[len("weights."):]: v.astype(np.float32) for k, v in h4.items() if k.startswith("weights.")}
header, blob = {}, b""
for k, v in weights.items():
    header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [len(blob), len(blob) + v.nbytes]}
    blob += v.tobytes()
h = json.dumps(header).encode()
os.makedirs(f"{work}/heads4_dir")
for p in (f"{work}/heads4.safetensors", f"{work}/heads4_dir/model.safetensors"):
    open(p, "wb").write(struct.pack("<Q", len(h)) + h + blob)
open(f"{work}/heads4_dir/config.json", "w").write('{"n_heads": 4}')
h4["input.text_emb"].astype(np.float32).tofile(f"{work}/heads4_embeds.f32")
h4["input.sample_eps"].astype(np.float32).tofile(f"{work}/heads4_eps.f32")
e = h4["input.sample_eps"].shape
open(f"{work}/heads4_dims.txt", "w").write(" ".join(map(str, list(h4["input.text_emb"].shape) + [e[1], e[2]])))
PY
echo "tsan: running the C API test"
if ! env -u NOISEAR_DEVICE TSAN_OPTIONS="halt_on_error=1 exitcode=66" "$work/test_capi_tsan" "$fixtures/pth" "$work" >"$work/out.txt" 2>&1 \
    || grep -q "ThreadSanitizer" "$work/out.txt"; then
    tail -60 "$work/out.txt"
    echo "tsan: FAILED" >&2
    exit 1
fi
echo "tsan: clean ($(grep -o '[0-9]* passed, 0 failed' "$work/out.txt"))"
