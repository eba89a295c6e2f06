"""The flows of a level distiller: one per (teacher, level pair), or one per
level pair shared by the teachers.

:class:`LevelFlows` is what the detection and segmentation distillers run on
a tapped tuple of levels. It answers three questions with one code path for
separate and shared flows:

* :meth:`LevelFlows.runs`: one training run of a level per teacher (separate
  flows run in turn; a shared flow runs once on the level stacked per
  teacher, told by its teacher condition which copy follows which teacher);
* :meth:`LevelFlows.weighted_ensemble`: what the heads read at inference,
  the teachers' weighted mean of their implicit ensembles, in the student's
  space;
* :meth:`LevelFlows.flow`: the flow of one teacher and level pair.

The module is an ``nn.ModuleList`` in the order ``teacher 0's level pairs,
teacher 1's, ...`` (one set of level pairs when shared): the parameter names
of saved distillers (``flows.{i}.…``, ``ema_flows.{i}.…``) stay valid.
Adapters into each teacher's shape are neither held nor run here: the
distiller owns them (``teacher_adapters``) and applies them with the teacher
level's size.
"""
from typing import List, Optional, Sequence, Tuple, Union

from torch import Tensor, nn

from ..flow import META_ENCODERS, FlowOutput, FlowTransfer, build_condition
from ..flow.batching import BatchedRun, batching_problem, run_batched
from ..flow.reduction import ChannelReduction
from .teacher import stack_for_teachers, weighted

Shape = Tuple[int, ...]


class LevelFlows(nn.ModuleList):
    """Flows keyed by teacher ``j`` and level pair ``k`` (see the module
    docstring).

    Args:
        flows: the flows, teacher-major (``j * num_levels + k``); one set of
            ``num_levels`` when ``teachers_share``.
        num_levels: distilled level pairs.
        teachers_share: one flow per level for every teacher (a
            ``'teacher'`` condition tells it which teacher a copy follows;
            ``teacher_flows='shared'``).
    """

    def __init__(self, flows: Sequence[FlowTransfer], num_levels: int, teachers_share: bool = False) -> None:
        super().__init__(flows)
        if len(flows) % num_levels:
            raise ValueError(f'{len(flows)} flows do not split into sets of {num_levels} level pairs')
        self.num_levels, self.teachers_share = num_levels, teachers_share

    def flow(self, j: int, k: int) -> FlowTransfer:
        """The flow of level pair ``k`` toward teacher ``j``."""
        return self[k if self.teachers_share else j * self.num_levels + k]

    def runs(self, k: int, level: Tensor, num_steps: int, teachers: Sequence[int],
             labels: Optional[Tensor] = None) -> List[FlowOutput]:
        """One run of level pair ``k`` toward each teacher in ``teachers``,
        in that order (``estimates`` in the student's space; a shared flow's
        runs are the parts of one run on the stacked level). ``labels`` feed
        a class condition in training."""
        if not self.teachers_share:
            return [self.flow(j, k).run(level, num_steps, labels=labels) for j in teachers]
        flow = self.flow(0, k)
        stacked, stacked_labels, context = stack_for_teachers(flow, level, teachers, labels)
        return flow.run(stacked, num_steps, context, stacked_labels).split(len(teachers))

    def weighted_ensemble(self, k: int, level: Tensor, num_steps: int, teachers: Sequence[int],
                 weights: Sequence[float]) -> Tensor:
        """The implicit ensemble of level pair ``k`` (student space),
        weighted over ``teachers``."""
        return weighted([out.mean_estimate() for out in self.runs(k, level, num_steps, teachers)], weights)

    def batched_runs(self, j: int, levels: Sequence[Tensor], num_steps: int) -> BatchedRun:
        """One run toward teacher ``j`` of every level pair at once, one per
        pair in order (``levels``: the student's level of each pair), in one
        meta-encoder call per step (:func:`~fmkt_mm.flow.batching.run_batched`): a
        :class:`~fmkt_mm.flow.batching.BatchedRun`, its ``outputs`` one per pair."""
        return run_batched([self.flow(j, k) for k in range(self.num_levels)], levels, num_steps)

    def check_batchable(self) -> None:
        """Level batching needs one token-wise meta-encoder for every level
        pair of a teacher (``flow=dict(shared_encoder=True, encoder=dict(
        type='mlp'))``) and one flow per teacher."""
        if self.teachers_share:
            raise ValueError("flow.batch_levels carries every level in one call per teacher; with "
                             "teacher_flows='shared' the teachers already share one call per "
                             "level: use teacher_flows='separate' or batch_levels=False")
        for j in range(len(self) // self.num_levels):
            problem = batching_problem([self.flow(j, k) for k in range(self.num_levels)])
            if problem:
                raise ValueError(f'flow.batch_levels needs one token-wise meta-encoder shared by every level '
                                 f"(flow=dict(shared_encoder=True, encoder=dict(type='mlp'))); got {problem}")

    def roundtrip(self, j: int, k: int, level: Tensor, num_steps: int, x_teacher: Optional[Tensor] = None,
                  refine: int = 0) -> dict:
        """:meth:`~fmkt_mm.flow.FlowTransfer.roundtrip` of teacher ``j``'s
        flow at level pair ``k`` (a shared flow at teacher ``j``'s context)."""
        flow, context = self.flow(j, k), None
        if self.teachers_share:
            level, _, context = stack_for_teachers(flow, level, [j])
        return flow.roundtrip(level, num_steps, x_teacher=x_teacher, refine=refine, context=context)


class LevelFlowFactory:
    """Builds the flows of a level distiller set by set (a set of level
    pairs per teacher, or one set shared by the teachers), level by level:
    :meth:`start_set` builds what a set's flows share (the encoder, its
    condition and width reduction with ``shared_encoder``), :meth:`flow`
    one level pair's flow. The caller builds its own modules between these
    calls (the distiller its adapters), so the build order, which fixes the
    initial weights, stays the caller's to keep.

    ``flow_cfg``: :class:`~fmkt_mm.flow.FlowTransfer` arguments besides
    ``channels`` and ``condition``, with the ``encoder`` config (a shared
    encoder shares the ``width`` reduction too); ``condition_cfg``: the
    flows' condition config.
    """

    def __init__(self, flow_cfg: dict, level_pairs: Sequence[Tuple[int, int]], student_shapes: Sequence[Shape],
                 num_teachers: int, teachers_share: bool, shared_encoder: bool,
                 condition_cfg: Optional[Union[str, dict, list, nn.Module]]) -> None:
        self.flow_cfg = dict(flow_cfg)
        self.encoder_cfg, self.width = self.flow_cfg.pop('encoder'), self.flow_cfg.pop('width', None)
        self.level_pairs, self.student_shapes = level_pairs, student_shapes
        self.num_teachers, self.teachers_share = num_teachers, teachers_share
        self.shared_encoder, self.condition_cfg = shared_encoder, condition_cfg
        #: the sets of level pairs: one per teacher, or one shared by all
        self.sets = 1 if teachers_share else num_teachers
        self._shared: Optional[tuple] = None

    def _condition(self, channels: int):
        return build_condition(self.condition_cfg, channels, num_levels=len(self.level_pairs),
                               num_teachers=self.num_teachers)

    def start_set(self) -> None:
        """Build what the next set's flows share (with ``shared_encoder``)."""
        if not self.shared_encoder:
            return
        channels = sorted({self.student_shapes[s][1] for s, _ in self.level_pairs})
        if len(channels) > 1:
            raise ValueError(f'shared_encoder=True needs equal channels on every distilled student '
                             f'level, got {channels}; distil levels of one width or set '
                             f'shared_encoder=False')
        condition = self._condition(channels[0])
        context = {} if condition is None else dict(context_dim=condition.dim)
        width = None if self.width is None else ChannelReduction(channels[0], self.width)
        encoder = META_ENCODERS.build(self.encoder_cfg, channels=self.width or channels[0], **context)
        self._shared = (condition, encoder, width)

    def flow(self, k: int) -> FlowTransfer:
        """The flow of level pair ``k`` in the current set."""
        channels = self.student_shapes[self.level_pairs[k][0]][1]
        if self._shared is not None:
            condition, encoder, width = self._shared
        else:
            condition, encoder, width = self._condition(channels), self.encoder_cfg, self.width
        return FlowTransfer(channels=channels, encoder=encoder, condition=condition, condition_level=k,
                            width=width, **self.flow_cfg)

    def flows(self, built: Sequence[FlowTransfer]) -> LevelFlows:
        """The :class:`LevelFlows` of the flows built, set-major."""
        return LevelFlows(built, len(self.level_pairs), teachers_share=self.teachers_share)


__all__ = ['LevelFlows', 'LevelFlowFactory']
