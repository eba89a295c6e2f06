"""What a flow's metric loss costs on the stacked steps of one level.

A flow's training run ends in one call of its metric loss on all ``N``
steps, ``forward_steps(steps (N, B, C, H, W), teacher (B, C, H, W))``. At a
large level (Faster R-CNN's P2 at 1333x800: 200 x 336 positions) every
tensor of the steps' size that the loss keeps for backward is a full copy of
the estimates. Per metric loss, side by side in one process:

* **kept for backward**: the bytes saved for the backward pass by the loss
  (``torch.autograd.graph.saved_tensors_hooks``, each storage once), also in
  units of one copy of the steps (``copies``; the steps themselves count
  when the loss keeps them: otherwise they would be freed);
* **operators**: aten operators dispatched by forward and backward
  (machine-independent);
* **time**: forward + backward, the median of ``--repeat`` (machine-dependent;
  read the ratios), against ``N`` separate calls of the loss, one per step.

::

    python tools/benchmarks/loss_steps.py                 # a quarter of P2, N = 4, batch 2
    python tools/benchmarks/loss_steps.py --size 200 336  # P2 at 1333x800
    python tools/benchmarks/loss_steps.py --quick         # a smoke run
"""
import argparse
import os.path as osp
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import reporting
import torch

from fmkt_mm.losses import CWDLoss, MSELoss, PixelKDLoss, PKDLoss
from fmkt_mm.studies import count_operators

#: the losses a level flow takes: name -> factory
LOSSES: Dict[str, Callable[[], torch.nn.Module]] = {
    'PKD': PKDLoss,
    'MSE': MSELoss,
    'CWD': lambda: CWDLoss(tau=1.0),
    'pixel KD': lambda: PixelKDLoss(tau=1.0),
}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=4, help='flow steps N')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--size', type=int, nargs=2, default=(100, 168), metavar=('H', 'W'),
                        help='the level (default: a quarter of P2 at 1333x800)')
    parser.add_argument('--losses', nargs='+', default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--quick', action='store_true', help='a small level, one repeat')
    parser.add_argument('--out', default=None, help='the table (default: '
                        'work_dirs/benchmark_cost/loss_steps.md); the measurements as JSON beside it')
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.channels, args.repeat = (6, 10), 8, 1
    args.out = args.out or osp.join('work_dirs', 'benchmark_cost', 'quick' if args.quick else '', 'loss_steps.md')
    return args


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes the autograd graph of ``fn()`` keeps for backward (each storage once)."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    del out
    return sum(storages.values())


def measure(loss: torch.nn.Module, steps: torch.Tensor, teacher: torch.Tensor, per_step: bool,
            repeat: int) -> dict:
    """Saved bytes, operators and seconds of one forward + backward."""
    def forward():
        x = steps.detach().requires_grad_()
        if per_step:
            return x, torch.stack([loss(step, teacher) for step in x])
        return x, loss.forward_steps(x, teacher)

    def step():
        x, values = forward()
        values.sum().backward()

    step()  # warm-up
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return dict(saved=saved_bytes(lambda: forward()[1]), operators=count_operators(step),
                seconds=statistics.median(seconds))


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    start = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, b, c, (h, w) = args.steps, args.batch, args.channels, args.size
    steps, teacher = torch.randn(n, b, c, h, w), torch.randn(b, c, h, w)
    copy = steps.numel() * steps.element_size()
    rows: List[dict] = []
    for name in args.losses:
        loss = LOSSES[name]()
        stacked = measure(loss, steps, teacher, False, args.repeat)
        separate = measure(loss, steps, teacher, True, args.repeat)
        rows.append(dict(loss=name, stacked=stacked, per_step=separate))
    text = [f'# The metric loss on {n} stacked steps of a ({b}, {c}, {h}, {w}) level', '',
            f'One copy of the steps: {copy / 2**20:.1f} MiB.', '',
            '| loss | kept for backward, MiB | copies | operators | x per step | time, ms | x per step |',
            '|---|---|---|---|---|---|---|']
    for row in rows:
        one, each = row['stacked'], row['per_step']
        text.append(f"| {row['loss']} | {one['saved'] / 2**20:.1f} | {one['saved'] / copy:.2f} | "
                    f"{one['operators']} | {one['operators'] / each['operators']:.2f} | "
                    f"{one['seconds'] * 1e3:.1f} | {one['seconds'] / each['seconds']:.2f} |")
    text += ['', f'Per step ({n} calls of the loss): ' + ', '.join(
        f"{row['loss']} {row['per_step']['saved'] / copy:.2f} copies" for row in rows) + '.']
    return reporting.finish(args, dict(reporting.provenance(__file__, argv), rows=rows, copy_bytes=copy), text,
                            start)


if __name__ == '__main__':
    main()
