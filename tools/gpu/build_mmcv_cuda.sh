#!/usr/bin/env bash
# Builds an mmcv 2.1.0 wheel with its CUDA ops for the lent GPU machine, on
# this CPU machine: Python 3.12 (pyenv), torch 2.11.0 + CUDA 13.0 (the
# device's build; its CUDA version is checked in the wheel before building),
# nvcc and the CUDA headers from PyPI, sm_90 (H100/H200).
#
#   bash tools/gpu/build_mmcv_cuda.sh            # -> build/gpu/wheels/mmcv-2.1.0-cp312-*.whl
#
# Everything goes under build/gpu (ignored by git): the venv, the downloads,
# the unpacked source, the log (build/gpu/build_mmcv.log, with the time and
# the wheel's size). Variables: PY312 (a Python 3.12), TORCH_CUDA_ARCH_LIST
# (default 9.0), MAX_JOBS (default 2), MMCV_CFLAGS (default -O2 -g0 -DNDEBUG).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/build/gpu"
TORCH_VERSION=2.11.0
CUDA_VERSION=13.0
CUDA_PIP="13.0.*"
MMCV_VERSION=2.1.0
mkdir -p "$OUT/dl" "$OUT/wheels"
LOG="$OUT/build_mmcv.log"
log() { printf '[build_mmcv_cuda] %s\n' "$*" | tee -a "$LOG" >&2; }

PY312=${PY312:-}
if [ -z "$PY312" ]; then
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 "$(command -v python3.12 || true)"; do
        if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            PY312=$candidate; break
        fi
    done
fi
[ -n "$PY312" ] || { log "ERROR: no Python 3.12 (set PY312, or: pyenv install 3.12)"; exit 1; }
VENV="$OUT/venv312"
[ -x "$VENV/bin/python" ] || "$PY312" -m venv "$VENV"
PY="$VENV/bin/python"
pip() { "$PY" -m pip --disable-pip-version-check -q "$@"; }

# 1. torch 2.11.0 as the device has it: check the wheel's CUDA version first
WHEEL=$(ls "$OUT"/dl/torch-$TORCH_VERSION-cp312-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$WHEEL" ]; then
    log "downloading torch $TORCH_VERSION (cp312)"
    pip download --no-deps --only-binary=:all: -d "$OUT/dl" "torch==$TORCH_VERSION"
    WHEEL=$(ls "$OUT"/dl/torch-$TORCH_VERSION-cp312-*.whl | head -n 1)
fi
WHEEL_CUDA=$(unzip -p "$WHEEL" torch/version.py | sed -n "s/^cuda: Optional\[str\] = '\(.*\)'/\1/p")
if [ "$WHEEL_CUDA" != "$CUDA_VERSION" ]; then
    log "ERROR: $WHEEL is built for CUDA '$WHEEL_CUDA', the device runs CUDA $CUDA_VERSION"; exit 1
fi
log "torch wheel $(basename "$WHEEL"): CUDA $WHEEL_CUDA"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    log "installing torch with its CUDA $CUDA_VERSION libraries (cublas/cusparse/cusolver headers)"
    pip install "$WHEEL" "setuptools>=77.0.3,<81" wheel ninja
fi

# 2. nvcc, its compiler back end and the CUDA C++ headers, from PyPI
if ! "$PY" -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('nvidia.cu13') or u.find_spec('nvidia') else 1)" \
        || [ -z "$(find "$VENV" -name nvcc -type f 2>/dev/null | head -n 1)" ]; then
    log "installing nvcc $CUDA_PIP and the CUDA headers"
    pip install "nvidia-cuda-nvcc==$CUDA_PIP" "nvidia-cuda-cccl==$CUDA_PIP" "nvidia-cuda-crt==$CUDA_PIP" \
        "nvidia-nvvm==$CUDA_PIP" "nvidia-cuda-runtime==$CUDA_PIP"
fi
NVCC=$(find "$VENV" -path '*nvidia*' -name nvcc -type f | head -n 1)
# CUDA 13's wheels share one folder (nvidia/cu13: bin, include, lib, nvvm), which is CUDA_HOME;
# torch's extension builder links from lib64 and the unversioned libcudart.so
CUDA_HOME=$(dirname "$(dirname "$NVCC")")
[ -e "$CUDA_HOME/lib64" ] || ln -s lib "$CUDA_HOME/lib64"
for lib in "$CUDA_HOME"/lib/libcudart.so.*; do
    [ -e "$lib" ] && [ ! -e "$CUDA_HOME/lib/libcudart.so" ] && ln -s "$(basename "$lib")" "$CUDA_HOME/lib/libcudart.so"
done
export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
log "nvcc: $("$CUDA_HOME/bin/nvcc" --version | tail -n 2 | head -n 1)"

# 3. mmcv's source, unpacked (patches, if any are needed, are applied here)
SRC="$OUT/mmcv-$MMCV_VERSION"
if [ ! -d "$SRC" ]; then
    pip download --no-deps --no-binary=:all: --no-build-isolation -d "$OUT/dl" "mmcv==$MMCV_VERSION"
    tar -xzf "$OUT/dl/mmcv-$MMCV_VERSION.tar.gz" -C "$OUT"
fi

# 4. the build, timed
log "building mmcv $MMCV_VERSION: TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-2}"
START=$(date +%s)
(cd "$SRC" && FORCE_CUDA=1 MMCV_WITH_OPS=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
    MAX_JOBS="${MAX_JOBS:-2}" CFLAGS="${MMCV_CFLAGS:--O2 -g0 -DNDEBUG}" \
    "$PY" -m pip wheel --no-build-isolation --no-deps -w "$OUT/wheels" . >>"$LOG" 2>&1) || {
    log "ERROR: the build failed after $(( $(date +%s) - START )) s; the first errors:"
    grep -m 20 -E "error|Error" "$LOG" | tee -a "$LOG.errors" >&2
    exit 1
}
BUILT=$(ls "$OUT"/wheels/mmcv-$MMCV_VERSION-cp312-*.whl)
log "built $(basename "$BUILT") in $(( $(date +%s) - START )) s, $(du -m "$BUILT" | cut -f1) MiB"
