#!/usr/bin/env bash
# The GPU checks in one command, within about 8 minutes on the lent GPU
# machine (H200, Python 3.12, torch 2.11.0+cu130, no network), every result
# written into OUT_DIR:
#
#   bash tools/gpu/device_check.sh OUT_DIR [--device cuda|cpu] [--tiny]
#
# Prepared here beforehand (all under build/gpu, carried with the tree):
#   bash tools/gpu/build_mmcv_cuda.sh    # mmcv 2.1.0 with CUDA ops for cp312 / torch 2.11 / sm_90
#   bash tools/gpu/wheels.sh             # mmengine, mmdet, mmpretrain, pycocotools, ...
#   python tools/data/make_detection_set.py --out build/gpu/fashion_det --num-train 400 --num-val 100
# On the device (carry build/gpu):
#   bash tools/gpu/device_check.sh "$OUT"
#
# Steps, each with its own time limit, its log in OUT_DIR, and its exit
# status in OUT_DIR/summary.md (a failed step does not stop the others):
#   1. install the carried wheels into a target folder;  2. python -m fmkt_mm.check_env;
#   3. detection with mmcv's CUDA ops on the composed set: the RetinaNet teacher briefly, then PKD
#      and FM-KT (the default recipe), bbox mAP and s/iter;  4. the classification cost table at
#      batch 32 and 64 (KD, DIST, FM-KT N=1/8, Theta);  5. COCO-resolution detection (800x1333,
#      batch 2, X101 -> R50: student, PKD, FM-KT) memory and step time;  6. fp16 AMP detection steps;
#   7. one NCCL DDP step (1 rank);  8. compile=True step time.
# --device cpu --tiny is the dry run here: the same steps at tiny sizes, in about a minute; the
# environment check, the PKD run, the classification cost table, AMP and DDP steps are left to the
# test suite, which runs their commands (PKD's is the FM-KT run's form).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT_DIR=${1:?usage: $0 OUT_DIR [--device cuda|cpu] [--tiny]}
shift
DEVICE=cuda
TINY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --tiny) TINY=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="${WORK:-/tmp/fmkt_device_check}"
rm -rf "$WORK"; mkdir -p "$WORK"
PY=${PYTHON:-python3}
[ -x "$ROOT/.venv/bin/python" ] && [ "$DEVICE" = cpu ] && PY=${PYTHON:-$ROOT/.venv/bin/python}
SUMMARY="$OUT_DIR/summary.md"
echo "# Device check ($(date -u +%Y-%m-%dT%H:%MZ), device $DEVICE, tiny $TINY, commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))" > "$SUMMARY"
echo >> "$SUMMARY"
echo "| step | exit | seconds | log |" >> "$SUMMARY"
echo "|---|---|---|---|" >> "$SUMMARY"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

step() {  # step NAME LIMIT_S COMMAND...: run, log, record
    local name=$1 limit=$2; shift 2
    local start=$(date +%s)
    timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    local rc=$?
    echo "| $name | $rc | $(( $(date +%s) - start )) | $name.log |" >> "$SUMMARY"
    echo "[device_check] $name: exit $rc in $(( $(date +%s) - start )) s" >&2
    return 0
}

# a step the dry run leaves to the test suite (the same command, tested on the CPU there)
dry_skip() {  # dry_skip NAME WHERE
    echo "| $1 | skipped | 0 | (dry run: $2) |" >> "$SUMMARY"
}

# sizes: the GPU run, or the CPU dry run
if [ "$TINY" = 1 ]; then
    NUM_TRAIN=8; NUM_VAL=4; TEACHER_EPOCHS=1; STUDENT_EPOCHS=1; DET_BATCH=4
    # the dry run measures one flow row beside the references with an R50 teacher (its --det-teacher
    # comes last and wins; the GPU run: every row, the X101 teacher; the rows' own smoke runs are in
    # tests/tools/test_benchmarks.py)
    COST_ARGS=(--quick --in-process)
    COCO_ARGS=(--quick --in-process --det-width 192 --det-methods fmkt
               --det-teacher mmdet::retinanet/retinanet_r50_fpn_2x_coco.py)
    DATA="$WORK/fashion_det"
else
    NUM_TRAIN=400; NUM_VAL=100; TEACHER_EPOCHS=6; STUDENT_EPOCHS=3; DET_BATCH=16
    COST_ARGS=(--iters 10 --warmup 3); COCO_ARGS=(--iters 5 --warmup 2 --det-size 800 --det-width 1333)
    DATA="${DATA:-$ROOT/build/gpu/fashion_det}"
fi

# 1. the carried wheels (the GPU machine cannot download)
if [ "$DEVICE" = cuda ] && ls "$ROOT"/build/gpu/wheels/*.whl >/dev/null 2>&1; then
    step install 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" "$ROOT"/build/gpu/wheels/*.whl
    export PYTHONPATH="$WORK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi

# 2. the environment
if [ "$TINY" = 1 ]; then
    dry_skip check_env tests/project/test_install.py
else
    step check_env 60 "$PY" -m fmkt_mm.check_env
fi

# 3. detection on the composed set with mmcv's ops on the device
[ -f "$DATA/annotations/instances_val.json" ] || \
    step make_set 120 "$PY" "$ROOT/tools/data/make_detection_set.py" --out "$DATA" \
        --num-train "$NUM_TRAIN" --num-val "$NUM_VAL"
data_options() {
    echo "train_dataloader.dataset.data_root=$DATA/ val_dataloader.dataset.data_root=$DATA/" \
         "test_dataloader.dataset.data_root=$DATA/" \
         "val_evaluator.ann_file=$DATA/annotations/instances_val.json" \
         "test_evaluator.ann_file=$DATA/annotations/instances_val.json" \
         "train_dataloader.batch_size=$DET_BATCH default_hooks.logger.interval=5"
}
DET="$ROOT/configs/fashion_det"
# shellcheck disable=SC2046
step det_teacher 240 "$PY" "$ROOT/tools/train.py" "$DET/retinanet_r18_teacher.py" --work-dir "$WORK/teacher" \
    --cfg-options $(data_options) train_cfg.max_epochs=$TEACHER_EPOCHS train_cfg.val_interval=$TEACHER_EPOCHS
TEACHER="$WORK/teacher/epoch_$TEACHER_EPOCHS.pth"
for method in pkd_retinanet_r18_to_r18w16 fmkt_retinanet_r18_to_r18w16_deploy-student; do
    # the dry run trains FM-KT only: PKD's command is the same form
    [ "$TINY" = 1 ] && [ "$method" = pkd_retinanet_r18_to_r18w16 ] && { dry_skip "det_$method" "its FM-KT row"; continue; }
    # shellcheck disable=SC2046
    step "det_$method" 180 "$PY" "$ROOT/tools/train.py" "$DET/$method.py" --work-dir "$WORK/$method" \
        --cfg-options $(data_options) train_cfg.max_epochs=$STUDENT_EPOCHS \
        train_cfg.val_interval=$STUDENT_EPOCHS distiller.teacher.checkpoint="$TEACHER"
done

# 4. the classification cost table (random ImageNet-shaped batches)
for batch in 32 64; do
    if [ "$TINY" = 1 ]; then
        [ "$batch" = 32 ] && dry_skip cost_cls_b32 tests/tools/test_benchmarks.py
        continue
    fi
    step "cost_cls_b$batch" 150 "$PY" "$ROOT/tools/benchmarks/cost.py" --task cls --device "$DEVICE" \
        --cls-batch "$batch" --encoders mlp --cls-steps 1 8 "${COST_ARGS[@]}" --out "$OUT_DIR/cost_cls_b$batch/results.md"
done

# 5. COCO resolution: memory and step time, X101-64x4d -> R50
step cost_det_coco 240 "$PY" "$ROOT/tools/benchmarks/cost.py" --task det --device "$DEVICE" --det-batch 2 \
    --det-teacher mmdet::retinanet/retinanet_x101-64x4d_fpn_2x_coco.py --det-steps 4 --det-encoders mlp \
    "${COCO_ARGS[@]}" --out "$OUT_DIR/cost_det_coco/results.md"

# 6. fp16 AMP detection steps (bf16 autocast on a CPU)
FMKT=fmkt_retinanet_r18_to_r18w16_deploy-student
if [ "$TINY" = 1 ]; then
    dry_skip det_amp tests/distill/test_ops.py
    dry_skip det_ddp tests/distill/test_ops.py
else
# shellcheck disable=SC2046
step det_amp 150 "$PY" "$ROOT/tools/train.py" "$DET/$FMKT.py" --amp --work-dir "$WORK/amp" \
    --cfg-options $(data_options) train_cfg.max_epochs=1 train_cfg.val_interval=1 \
    distiller.teacher.checkpoint="$TEACHER"

# 7. one DDP step over NCCL (gloo on a CPU), one rank
# shellcheck disable=SC2046
PYTHON="$PY" step det_ddp 150 bash "$ROOT/tools/dist_train.sh" "$DET/$FMKT.py" 1 --work-dir "$WORK/ddp" \
    --cfg-options $(data_options) train_cfg.max_epochs=1 train_cfg.val_interval=1 \
    distiller.teacher.checkpoint="$TEACHER"
fi

# 8. torch.compile (MMEngine's compile=True)
if [ "$TINY" = 1 ]; then
    echo "| compile | skipped | 0 | (dry run) |" >> "$SUMMARY"
else
    # shellcheck disable=SC2046
    step det_compile 240 "$PY" "$ROOT/tools/train.py" "$DET/$FMKT.py" --work-dir "$WORK/compile" \
        --cfg-options $(data_options) train_cfg.max_epochs=1 train_cfg.val_interval=1 compile=True \
        distiller.teacher.checkpoint="$TEACHER"
fi

"$PY" "$ROOT/tools/gpu/summarize.py" "$WORK" "$OUT_DIR" >> "$SUMMARY" 2>"$OUT_DIR/summarize.log"
cat "$SUMMARY"
