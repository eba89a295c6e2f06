#!/usr/bin/env bash
# Multi-process training with torchrun (MMEngine's 'pytorch' launcher):
#
#   bash tools/dist_train.sh CONFIG NUM_PROCS [tools/train.py options...]
#
# One process per GPU with NCCL; on a machine without a GPU, NUM_PROCS CPU
# processes with gloo. Single node: a free rendezvous port is picked unless
# PORT is set. Several nodes: run it on every node with NNODES, NODE_RANK,
# MASTER_ADDR and PORT set. PYTHON selects the interpreter (default: the
# repository's .venv, else python3).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NUM_PROCS [tools/train.py options...]" >&2
    exit 2
fi
CONFIG=$1
NUM_PROCS=$2
shift 2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
if [ "$NNODES" = 1 ] && [ -z "${PORT:-}" ]; then
    RDZV=(--standalone)
else
    RDZV=(--nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="${PORT:-29500}")
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m torch.distributed.run "${RDZV[@]}" --nproc_per_node="$NUM_PROCS" \
    "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
