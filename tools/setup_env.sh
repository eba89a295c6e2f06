#!/usr/bin/env bash
# Creates (or completes) the project's isolated environment in .venv with the
# pinned OpenMMLab stack, then installs fmkt_mm into it in editable mode.
# Idempotent: every step checks what is already there, so a second run takes
# seconds. Versions live in requirements/constraints.txt only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FMKT_VENV:-$ROOT/.venv}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
PY="$VENV/bin/python"
log() { printf '[setup] %s\n' "$*" >&2; }

pip_install() { "$PY" -m pip install --disable-pip-version-check -q -c "$CONSTRAINTS" "$@"; }
has_module() { "$PY" - "$1" <<'PYEOF' >/dev/null 2>&1
import importlib.util, sys
sys.exit(0 if importlib.util.find_spec(sys.argv[1]) else 1)
PYEOF
}

# 1. Offline real data: Debian's Fashion-MNIST (read in place by the demos).
FASHION_DIR=/usr/share/datasets/fashion-mnist
if [ ! -f "$FASHION_DIR/train-images-idx3-ubyte.gz" ]; then
    if command -v apt-get >/dev/null 2>&1; then
        log "installing Debian package dataset-fashion-mnist"
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || {
            $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; }
    else
        log "WARNING: apt-get not found; install Debian's dataset-fashion-mnist to run the demos"
    fi
fi

# 2. The virtual environment.
if [ ! -x "$PY" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
fi

# 3. Build prerequisites first: mmcv's setup.py imports torch and pkg_resources.
if ! has_module torch || ! has_module pkg_resources || ! has_module wheel; then
    log "installing torch (CPU) and build tools"
    pip_install setuptools wheel torch
fi

# 4. mmcv with its compiled ops (mmdet needs mmcv._ext). The built wheel lands
#    in pip's cache, so only the first install on a machine pays the build.
if ! "$PY" -c "import mmcv._ext" >/dev/null 2>&1; then
    log "building mmcv with its C++ ops (first time on this machine: several minutes)"
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" CFLAGS="${MMCV_CFLAGS:--O2 -g0 -DNDEBUG}" \
        pip_install --no-build-isolation mmcv
fi

# 5. The rest of the stack, the test tools, and the project itself.
if ! has_module mmdet || ! has_module mmpretrain || ! has_module mmseg || ! has_module ftfy || ! has_module pytest || ! has_module fmkt_mm \
        || ! has_module pycocotools || ! has_module matplotlib || ! has_module ruff; then
    log "installing mmdet, mmpretrain, mmseg, torchvision, test tools and fmkt_mm"
    pip_install -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt" matplotlib
    pip_install --no-build-isolation --no-deps -e "$ROOT"
fi

# 6. torchvision's CUDA wheel beside a CPU torch: define the two operator
#    schemas it registers kernels for, before it is first imported, in every
#    interpreter of this environment (tests, workers, plain mmdet/mmpretrain).
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if ! cmp -s "$ROOT/tools/env/torchvision_cpu_shim.py" "$SITE/torchvision_cpu_shim.py"; then
    log "installing the torchvision import shim"
    cp "$ROOT/tools/env/torchvision_cpu_shim.py" "$SITE/torchvision_cpu_shim.py"
    echo "import torchvision_cpu_shim; torchvision_cpu_shim.install()" > "$SITE/torchvision_cpu_shim.pth"
fi

# 7. Real aerial images with tree boxes (the deepforest wheel's sample data,
#    read from the wheel, nothing installed): tools/data/deepforest_to_coco.py.
DEEPFOREST_WHEEL="$ROOT/data/downloads/deepforest-2.1.0-py3-none-any.whl"
if [ ! -f "$DEEPFOREST_WHEEL" ]; then
    log "downloading the deepforest wheel (its sample images) into data/downloads"
    "$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary :all: \
        deepforest==2.1.0 -d "$ROOT/data/downloads" \
        || log "WARNING: could not download deepforest 2.1.0; the real-image example needs it"
fi

"$PY" -c "import torchvision, mmcv._ext, mmdet.models, mmpretrain.models, mmseg.models, fmkt_mm" \
    || { log "ERROR: the environment in $VENV does not import; remove it and run again"; exit 1; }
log "environment ready: $VENV"
