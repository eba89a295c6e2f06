"""Several flows that share one token-wise meta-encoder, run in one call per
step: :func:`run_batched`.

An FPN's levels differ in size, so their flows cannot be stacked as a batch;
a token-wise encoder (the ``mlp``, which sees each position alone) can
nevertheless carry all of them at once: every level's positions are
concatenated into one ``(B, C, 1, P)`` token map, each level keeping its own
context (a :class:`~fmkt_mm.flow.encoders.PositionContext`), and the
estimates are split back into the levels' shapes.
"""
from typing import List, NamedTuple, Sequence, Tuple

import torch
from torch import Tensor

from .encoders import PositionContext
from .output import FlowOutput
from .transfer import FlowTransfer


def batching_problem(flows: Sequence[FlowTransfer]) -> str:
    """Why ``flows`` cannot run in one call per step ('' when they can):
    they need one token-wise meta-encoder, shared."""
    encoders = {id(flow.encoder) for flow in flows}
    encoder = flows[0].encoder
    if len(encoders) > 1 or not getattr(encoder, 'token_wise', False):
        return (f'{len(encoders)} encoder(s) of type {type(encoder).__name__}; batching needs one '
                f'token-wise meta-encoder shared by every flow')
    return ''


class BatchedRun(NamedTuple):
    """One run of several flows in one meta-encoder call per step
    (:func:`run_batched`): ``outputs``, one per level in its shape;
    ``tokens``, the levels' positions concatenated, ``(B, C, 1, P)``;
    ``run``, the run on the tokens; ``counts``, each level's positions, in
    order."""
    outputs: List[FlowOutput]
    tokens: Tensor
    run: FlowOutput
    counts: Tuple[int, ...]

    def mean_estimate(self) -> Tensor:
        """The implicit ensemble of every level's tokens, ``(B, C, 1, P)``."""
        return self.run.mean_estimate()


def run_batched(flows: Sequence[FlowTransfer], levels: Sequence[Tensor], num_steps: int) -> BatchedRun:
    """One run of each flow on its level (``flows[k]`` on ``levels[k]``,
    ``(B, C, H_k, W_k)``), all in one meta-encoder call per step (the flows
    share their encoder, :func:`batching_problem`); ``outputs`` in order,
    each in its level's shape with its own context (a reduced flow's as
    factors, never formed unless read)."""
    counts = tuple(x.shape[2] * x.shape[3] for x in levels)
    tokens = torch.cat([x.flatten(2) for x in levels], dim=2)[:, :, None]
    contexts = [flow.make_context(x) for flow, x in zip(flows, levels)]
    context = None if contexts[0] is None else PositionContext(torch.stack(contexts), counts)
    run = flows[0].run(tokens, num_steps, context)
    if run.factored is not None:
        starts = [sum(counts[:k]) for k in range(len(counts))]
        outputs = [FlowOutput(context=ctx, factored=run.factored.positions(start, start + n, x.shape[2:]))
                   for start, n, x, ctx in zip(starts, counts, levels, contexts)]
    else:
        outputs = [FlowOutput(part.reshape(*part.shape[:3], *x.shape[2:]), context=ctx)
                   for part, x, ctx in zip(run.estimates.split(counts, dim=-1), levels, contexts)]
    return BatchedRun(outputs, tokens, run, counts)


__all__ = ['BatchedRun', 'batching_problem', 'run_batched']
