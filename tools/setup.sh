#!/usr/bin/env bash
# Installs the system packages noisear-gpu builds and tests against (Debian/Ubuntu).
# Works as root (no sudo needed) and as a user with sudo. .ci/run calls this same script.
set -euo pipefail
# OpenCL (headers, ICD loader, PoCL: an OpenCL device on the CPU), Vulkan (headers, the
# loader, glslc to compile the shaders at build time, Mesa's lavapipe: a Vulkan device on the
# CPU), OpenBLAS, libpng, OpenSSL's libcrypto; patchelf (the Python wheel's run paths).
PACKAGES=(ocl-icd-opencl-dev opencl-c-headers pocl-opencl-icd clinfo
          libvulkan-dev libvulkan1 glslc mesa-vulkan-drivers
          libopenblas-dev libpng-dev libssl-dev pkg-config patchelf)
if [ "$(id -u)" = "0" ]; then
    AS_ROOT=()
elif command -v sudo >/dev/null 2>&1; then
    AS_ROOT=(sudo)
else
    echo "setup.sh: run as root or install sudo (needs: apt-get install ${PACKAGES[*]})" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
${AS_ROOT[@]+"${AS_ROOT[@]}"} apt-get update
${AS_ROOT[@]+"${AS_ROOT[@]}"} apt-get install -y --no-install-recommends "${PACKAGES[@]}"
# The Python package's tests need numpy and pytest (no PyTorch).
if ! python3 -c "import numpy, pytest" 2>/dev/null; then
    python3 -m pip install --quiet numpy pytest
fi
