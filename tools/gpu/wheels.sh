#!/usr/bin/env bash
# Downloads the wheels the GPU machine lacks (Python 3.12, no network there):
# the OpenMMLab packages and their pure-Python needs that its image does not
# hold (it has torch 2.11.0+cu130, numpy, opencv-python-headless, matplotlib,
# scipy, pyyaml, rich, einops, ...). One version of each, into build/gpu/wheels
# beside the mmcv wheel of tools/gpu/build_mmcv_cuda.sh; prints the total size.
#
#   bash tools/gpu/wheels.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/build/gpu/wheels"
mkdir -p "$OUT"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64)
WHEELS=(
    mmengine==0.10.7 mmdet==3.3.0 mmpretrain==1.2.0 pycocotools==2.0.11
    # their needs that the device image lacks
    addict==2.4.0 yapf==0.43.0 termcolor==3.3.0 terminaltables==3.1.10 shapely==2.2.0
    model-index==0.1.11 ordered-set==4.1.0 mat4py==0.6.0 platformdirs==4.14.5 importlib-metadata==8.7.0
)
python3 -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$OUT" "${WHEELS[@]}"
ls -1 "$OUT"
echo "total: $(du -cm "$OUT"/*.whl | tail -n 1 | cut -f1) MiB in $OUT"
