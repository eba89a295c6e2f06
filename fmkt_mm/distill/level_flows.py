"""The flows of a level distiller: one per (teacher, level pair), or one per
level pair shared by the teachers.

:class:`LevelFlows` is what the detection and segmentation distillers run on
a tapped tuple of levels. It answers three questions with one code path for
separate and shared flows:

* :meth:`LevelFlows.runs`: one training run of a level per teacher (separate
  flows run in turn; a shared flow runs once on the level stacked per
  teacher, told by its teacher condition which copy follows which teacher);
* :meth:`LevelFlows.ensemble`: what the heads read at inference, the weighted
  implicit ensemble in the student's space;
* :meth:`LevelFlows.flow`: the flow of one teacher and level pair.

The module is an ``nn.ModuleList`` in the order ``teacher 0's level pairs,
teacher 1's, ...`` (one set of level pairs when shared): the parameter names
of saved distillers (``flows.{i}.…``, ``ema_flows.{i}.…``) stay valid.
Adapters into each teacher's shape are not run here: their owner (the
distiller) calls them with the teacher level's size.
"""
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..flow import META_ENCODERS, FlowOutput, FlowTransfer, build_condition
from ..flow.encoders import PositionContext
from ..flow.reduction import ChannelReduction
from .teacher import stack_for_teachers, weighted

Shape = Tuple[int, ...]


class LevelFlows(nn.ModuleList):
    """Flows keyed by teacher ``j`` and level pair ``k`` (see the module
    docstring).

    Args:
        flows: the flows, teacher-major (``j * num_levels + k``); one set of
            ``num_levels`` when ``shared``.
        num_levels: distilled level pairs.
        shared: one flow per level for every teacher (a ``'teacher'``
            condition tells it which teacher a copy follows).
    """

    def __init__(self, flows: Sequence[FlowTransfer], num_levels: int, shared: bool = False) -> None:
        super().__init__(flows)
        if len(flows) % num_levels:
            raise ValueError(f'{len(flows)} flows do not split into sets of {num_levels} level pairs')
        self.num_levels, self.shared = num_levels, shared

    def flow(self, j: int, k: int) -> FlowTransfer:
        """The flow of level pair ``k`` toward teacher ``j``."""
        return self[k if self.shared else j * self.num_levels + k]

    def runs(self, k: int, level: Tensor, num_steps: int, teachers: Sequence[int],
             labels: Optional[Tensor] = None) -> List[FlowOutput]:
        """One run of level pair ``k`` toward each teacher in ``teachers``,
        in that order (``estimates`` in the student's space; a shared flow's
        runs are the parts of one run on the stacked level). ``labels`` feed
        a class condition in training."""
        if not self.shared:
            return [self.flow(j, k).run(level, num_steps, labels=labels) for j in teachers]
        flow = self.flow(0, k)
        stacked, stacked_labels, context = stack_for_teachers(flow, level, teachers, labels)
        return flow.run(stacked, num_steps, context, stacked_labels).split(len(teachers))

    def ensemble(self, k: int, level: Tensor, num_steps: int, teachers: Sequence[int],
                 weights: Sequence[float]) -> Tensor:
        """The implicit ensemble of level pair ``k`` (student space),
        weighted over ``teachers``."""
        return weighted([out.mean_estimate() for out in self.runs(k, level, num_steps, teachers)], weights)

    def batched_runs(self, j: int, levels: Sequence[Tensor], num_steps: int) -> List[FlowOutput]:
        """One run toward teacher ``j`` of every level pair at once, one per
        pair in order (``levels``: the student's level of each pair). The
        pairs' flows share one token-wise meta-encoder: every level's
        positions are concatenated into one ``(B, C, 1, P)`` token map,
        each keeping its own level's context (a
        :class:`~fmkt_mm.flow.encoders.PositionContext`), so a step calls
        the encoder once instead of once per level; the estimates are then
        split back into the levels' shapes."""
        flows = [self.flow(j, k) for k in range(self.num_levels)]
        counts = [x.shape[2] * x.shape[3] for x in levels]
        tokens = torch.cat([x.flatten(2) for x in levels], dim=2)[:, :, None]
        contexts = [flow.make_context(x) for flow, x in zip(flows, levels)]
        context = None if contexts[0] is None else PositionContext(torch.stack(contexts), counts)
        estimates = flows[0].run(tokens, num_steps, context).estimates.split(counts, dim=-1)
        return [FlowOutput(part.reshape(*part.shape[:3], *x.shape[2:]), context=ctx)
                for part, x, ctx in zip(estimates, levels, contexts)]

    def check_batchable(self) -> None:
        """Level batching needs one token-wise meta-encoder for every level
        pair of a teacher (``flow=dict(shared_encoder=True, encoder=dict(
        type='mlp'))``) and one flow per teacher."""
        if self.shared:
            raise ValueError("flow.batch_levels carries every level in one call per teacher; with "
                             "teacher_flows='shared' the teachers already share one call per "
                             "level: use teacher_flows='separate' or batch_levels=False")
        for j in range(len(self) // self.num_levels):
            encoders = {id(self.flow(j, k).encoder) for k in range(self.num_levels)}
            encoder = self.flow(j, 0).encoder
            if len(encoders) > 1 or not getattr(encoder, 'token_wise', False):
                raise ValueError(
                    f'flow.batch_levels needs one token-wise meta-encoder shared by every level '
                    f'(flow=dict(shared_encoder=True, encoder=dict(type=\'mlp\'))); got '
                    f'{len(encoders)} encoder(s) of type {type(encoder).__name__}')

    def roundtrip(self, j: int, k: int, level: Tensor, num_steps: int, x_teacher: Optional[Tensor] = None,
                  refine: int = 0) -> dict:
        """:meth:`~fmkt_mm.flow.ReverseSampler.roundtrip` of teacher ``j``'s
        flow at level pair ``k`` (a shared flow at teacher ``j``'s context)."""
        flow, context = self.flow(j, k), None
        if self.shared:
            level, _, context = stack_for_teachers(flow, level, [j])
        return flow.roundtrip(level, num_steps, x_teacher=x_teacher, refine=refine, context=context)


def build_level_flows(flow_cfg: dict, level_pairs: Sequence[Tuple[int, int]], student_shapes: Sequence[Shape],
                      num_teachers: int, shared_teachers: bool, shared_encoder: bool,
                      condition_cfg: Optional[Union[str, dict, list, nn.Module]],
                      adapter_of: Callable[[int, int], Optional[nn.Module]]) -> LevelFlows:
    """The :class:`LevelFlows` of a level distiller, built teacher by
    teacher, level by level (the order fixes the initial weights).

    ``flow_cfg``: :class:`~fmkt_mm.flow.FlowTransfer` arguments besides
    ``channels``, ``head`` and ``condition``, with the ``encoder`` config (a
    shared encoder shares the ``width`` reduction too);
    ``condition_cfg``: the flows' condition config; ``adapter_of(j, k)``:
    builds the head of teacher ``j``'s flow at pair ``k`` (separate flows
    only: a shared flow has no per-teacher head)."""
    flow_cfg = dict(flow_cfg)
    encoder_cfg, width = flow_cfg.pop('encoder'), flow_cfg.pop('width', None)

    def make_condition(channels: int):
        return build_condition(condition_cfg, channels, num_levels=len(level_pairs), num_teachers=num_teachers)

    flows = []
    for j in range(1 if shared_teachers else num_teachers):
        shared_condition = shared = shared_width = None
        if shared_encoder:
            channels = sorted({student_shapes[s][1] for s, _ in level_pairs})
            if len(channels) > 1:
                raise ValueError(f'shared_encoder=True needs equal channels on every distilled student '
                                 f'level, got {channels}; distil levels of one width or set '
                                 f'shared_encoder=False')
            shared_condition = make_condition(channels[0])
            context = {} if shared_condition is None else dict(context_dim=shared_condition.dim)
            shared_width = None if width is None else ChannelReduction(channels[0], width)
            shared = META_ENCODERS.build(encoder_cfg, channels=width or channels[0], **context)
        for k, (s, _) in enumerate(level_pairs):
            head = None if shared_teachers else adapter_of(j, k)
            if shared is not None:
                condition, encoder, level_width = shared_condition, shared, shared_width
            else:
                condition, encoder, level_width = make_condition(student_shapes[s][1]), encoder_cfg, width
            flows.append(FlowTransfer(channels=student_shapes[s][1], head=head, encoder=encoder,
                                      condition=condition, condition_level=k, width=level_width, **flow_cfg))
    return LevelFlows(flows, len(level_pairs), shared=shared_teachers)


__all__ = ['LevelFlows', 'build_level_flows']
