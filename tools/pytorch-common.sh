# Shared set-up of the PyTorch comparison scripts (sourced, not run): after `pytorch_setup NAME
# PYTHON MODULES`, $root, $bin, $model and $ref are set, the binary, the reference and the
# interpreter's modules are checked (one line and exit 1 when something is missing), and $out is
# a temporary folder removed on exit.
pytorch_setup() {
    local name="$1" py="$2" modules="$3"
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    bin="$root/.build/release/noisear-gpu"
    model="$root/Sources/NoiseARShapes/weights/shapes-diffusion.safetensors"
    ref="${NOISEAR_PYTORCH_REFERENCE:-$root/../shared/tools/pytorch_reference.py}"
    [ -x "$bin" ] || { echo "$name: build first: swift build -c release" >&2; exit 1; }
    [ -f "$ref" ] || { echo "$name: no PyTorch reference at $ref (set NOISEAR_PYTORCH_REFERENCE)" >&2; exit 1; }
    "$py" -c "import ${modules// /, }" 2>/dev/null || { echo "$name: $py lacks ${modules// //}" >&2; exit 1; }
    export NOISEAR_PYTORCH_REFERENCE_DIR="$(dirname "$ref")"
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
}
