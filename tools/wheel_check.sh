#!/usr/bin/env bash
# Builds the Python wheel (pip wheel ./python) and checks it is portable: platform-tagged, its
# libraries' run paths are $ORIGIN only (no toolchain folder), the source tree is left clean,
# and in a fresh venv it imports, samples a prior and the shipped shapes-world model with the
# Swift toolchain's library folder and the repository's weights hidden (a private mount
# namespace; where that is not permitted, ld.so is asked to resolve without the toolchain path).
# Part of the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures=$(cd "${NOISEAR_FIXTURES:-../shared/fixtures}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
before=$(git status --porcelain --ignored python 2>/dev/null || true)
pip wheel --no-deps ./python -w "$work/dist" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/noisear_gpu-*.whl)
case "$wheel" in *-py3-none-any.whl) echo "wheel: $wheel is tagged for any platform but holds native code" >&2; exit 1 ;; esac
after=$(git status --porcelain --ignored python 2>/dev/null || true)
[ "$before" = "$after" ] || { echo "wheel: building left files in the source tree:"; diff <(echo "$before") <(echo "$after"); exit 1; }
mkdir "$work/unpacked" && (cd "$work/unpacked" && python3 -m zipfile -e "$wheel" .)
toolchain=$(dirname "$(dirname "$(command -v swift)")")/lib/swift
pkg=$(dirname "$(find "$work/unpacked" -name libnoisear.so | head -1)")
[ -n "$pkg" ] && [ "$pkg" != . ] || { echo "wheel: no libnoisear.so in $(basename "$wheel")" >&2; exit 1; }
for so in "$pkg"/*.so*; do
    rp=$(readelf -d "$so" | sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\]/\2/p')
    if [ -n "$rp" ] && [ "$rp" != '$ORIGIN' ]; then echo "wheel: $(basename "$so") has run path '$rp'" >&2; exit 1; fi
done
for w in Sources/NoiseARShapes/weights/*.safetensors; do
    [ -f "$pkg/$(basename "$w")" ] || { echo "wheel: $(basename "$w") is not in the wheel" >&2; exit 1; }
done
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --no-index --find-links "$work/dist" numpy noisear-gpu 2>/dev/null \
    || "$work/venv/bin/pip" install -q "$wheel"
cat >"$work/smoke.py" <<'PY'
import sys
import numpy as np
import noisear_gpu as ng
fixtures = sys.argv[1]
assert "site-packages" in ng.library_path(), ng.library_path()
prior = ng.load_prior(f"{fixtures}/pth/noisear_tiny.pth", device="cpu")
emb = np.random.default_rng(0).standard_normal((1, 5, prior.embed_size)).astype(np.float32)
noise = prior.sample(emb, seed=1, rng="torch")
images = ng.shapes_sample("a red circle to the left of a blue square", steps=4, batch=1)  # the wheel's weights
print(f"wheel ok: {ng.version()}, noise {noise.shape}, images {images.shape}")
PY
run_hidden() {
    unshare -m sh -c "mount -t tmpfs none '$toolchain' && mount -t tmpfs none '$PWD/Sources/NoiseARShapes/weights' \
        && cd / && env -u LD_LIBRARY_PATH -u NOISEAR_LIBRARY_PATH -u NOISEAR_MODEL '$work/venv/bin/python' '$work/smoke.py' '$fixtures'"
}
if unshare -m true 2>/dev/null; then
    run_hidden
else
    echo "wheel: no mount namespace here; checking that ld.so resolves every library without the toolchain"
    if env -u LD_LIBRARY_PATH ldd "$work"/venv/lib/python3*/site-packages/noisear_gpu/libnoisear.so | grep -E "not found|$toolchain"; then
        exit 1
    fi
    (cd / && env -u LD_LIBRARY_PATH -u NOISEAR_LIBRARY_PATH "$work/venv/bin/python" "$work/smoke.py" "$fixtures")
fi
echo "wheel: $(basename "$wheel") ($(du -h "$wheel" | cut -f1)) is portable"
