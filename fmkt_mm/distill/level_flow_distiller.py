"""FM-KT on a model's levels: the distiller the detection and segmentation
distillers share (one flow per distilled level pair and teacher).

A forward hook on the student's ``student_tap`` module (an FPN ``neck``, a
backbone, a head's last convolution) receives its tuple of levels
``(B, C_l, H_l, W_l)``. For every distilled level ``l`` a
:class:`~fmkt_mm.flow.FlowTransfer` in the student's channel space carries
the level toward the teacher's level in ``N`` serial steps; each step's
endpoint estimate is mapped into the teacher's shape (by the distiller's
adapter, or unchanged when the shapes match) and compared with the teacher's
level by the flow's metric loss. The hook then returns the tuple the
student's downstream modules read:

* ``deploy_mode='flow'`` (the paper's setting): the flows' implicit ensemble
  (mean of the endpoint estimates, in the student's space) replaces each
  distilled level, in training and at inference. The deployed model is the
  student plus its flows.
* ``deploy_mode='student'`` (zero inference cost): the downstream modules
  read the raw student levels; an extra loss pulls each raw level toward the
  detached ensemble, ``D(X_S, stopgrad(mean_i Xhat_i))``. Inference is the
  unchanged student and :meth:`student_state_dict` is a plain model
  checkpoint.

The student's own ``loss``/``predict`` then run unchanged, so the task
losses keep their names and ``predict`` returns the task's data samples.

FlowDistill options: conditional flows (``flow.condition``, with
``flow.shared_encoder`` and ``flow.batch_levels``), per-level multipliers of
the level weights (:attr:`LevelFlowDistiller.level_scales`, set by
:class:`~fmkt_mm.hooks.ProgressiveDistillationHook`), cycle consistency
(``roundtrip_loss_weight``) and :meth:`LevelFlowDistiller.roundtrip_errors`.

The parts: the options (:mod:`.level_options`), the flows by teacher and
level (:class:`~fmkt_mm.distill.level_flows.LevelFlows`), what it predicts
with (:mod:`.level_prediction`), the adapters and level shapes
(:class:`~fmkt_mm.distill.levels.LevelDistiller`), the tap
rewrite (:mod:`.tap_rewrite`); :class:`~fmkt_mm.hooks.FlowEMAHook` advances
the EMA. :class:`~fmkt_mm.distill.DetectionDistiller` and
:class:`~fmkt_mm.distill.SegmentationDistiller` name the task.
"""
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..flow import FlowOutput, FlowTransfer, RoundTrip
from ..flow.batching import BatchedRun
from ..flow.conditions import with_teacher_condition
from ..losses.base import scaled
from ..registry import MODELS
from ..utils import build_from_registry
from .base import check_roundtrip_weight
from .flow_ema import FlowEMA
from .level_flows import LevelFlowFactory, LevelFlows
from .level_options import LevelDistillerOptions, check_level_condition, group_options
from .level_prediction import LevelFlowPrediction
from .levels import LevelDistiller, as_levels, check_scales
from .tap_rewrite import rewrite_tap
from .taps import run_until_tapped
from .teacher import weighted


class LevelFlowDistiller(LevelFlowPrediction, FlowEMA, LevelDistiller):
    """FM-KT on the levels of a tapped module (see the module docstring);
    a subclass names the task (``prediction_field``, ``defaults``).

    Args:
        student, teacher, data_preprocessor, init_cfg: see
            :class:`BaseDistiller`. The student is any model whose
            ``levels.student_tap`` module returns a ``(B, C, H, W)`` tensor
            or a tuple of them.
        flow: :class:`~fmkt_mm.flow.FlowTransfer` arguments shared by all
            levels (``path``, ``encoder``, ``num_steps``, ``loss``,
            ``condition``, ``recompute``, ...; ``channels`` is inferred per
            level; defaults: 4 steps, a one-block ``conv`` meta-encoder,
            ``PKDLoss``), plus ``shared_encoder`` (one meta-encoder and
            condition for all levels of equal channels; pair it with
            ``condition=dict(type='level')``), ``batch_levels`` (with a
            shared token-wise ``mlp`` encoder: every level in one encoder call
            per step), ``width`` (each flow on a learned ``width``-channel
            projection of its level, moving it by a low-rank correction: the
            encoder's activations kept for backward shrink with the width;
            one projection for all levels with ``shared_encoder``) and
            ``roundtrip_loss_weight`` (``loss_roundtrip_l{l}``).
        levels: ``pairs``: an int ``l`` pairs student level ``l`` with teacher
            level ``l``, a pair ``(s, t)`` student level ``s`` with teacher
            level ``t`` (default: the first four, as in the paper);
            ``weights``: each level's flow-loss weight (a float or one per
            level; the paper uses 10 for RetinaNet, 6 for Faster R-CNN);
            ``student_tap`` / ``teacher_tap``: the modules whose outputs are
            the levels (the teacher's forward stops there); ``adapter``: the
            module mapping a student level to the teacher level's shape
            (``in_channels`` / ``out_channels`` filled in, called as
            ``adapter(x, size)``, e.g. ``dict(type='FeatureAdapter')``),
            required where a pair differs in channels or size;
            ``raw_loss_weight`` / ``raw_loss``: FM-KT plus direct feature
            distillation, ``loss_raw_l{l}`` between each raw student level
            (through its adapter) and the teacher's level (the metric
            defaults to the flow's, e.g. PKD's term on top of the flows');
            ``raw_pairs`` / ``raw_weights``: level pairs distilled by the raw
            loss alone, without a flow (``loss_raw_l{l}``, times the pair's
            weight; default weight: ``weights`` when one float), e.g. PKD on
            Faster R-CNN's P2 with flows on P3-P5; the heads read these
            levels unchanged;
            ``dummy_input_shape``: ``(C, H, W)`` of the zero batch that reads
            both sides' level shapes at build time.
        deploy: ``mode``: ``'flow'`` (heads read the flows' ensemble) or
            ``'student'`` (heads read the raw student; zero inference cost);
            ``eval_steps``: flow steps at inference (default: the training
            ``num_steps``); ``theta_loss`` / ``theta_loss_weight``: the metric
            of mode 'student' that pulls each raw level toward the detached
            ensemble (default: the flow's); ``ema_momentum``: keep an EMA of
            the flows for inference in mode 'flow' (MMEngine's convention:
            the weight of the new weights, e.g. ``0.0002``-``0.001``), with
            ``ema_warmup`` as mmdet's ``ExpMomentumEMA``: update ``k`` (from
            1) uses ``m_k = (1 - m) exp(-k / ema_warmup) + m``; the update
            count is a buffer (``ema_updates``), so resuming continues it.
        teachers: several teachers (see :class:`BaseDistiller`): ``models``,
            ``flows`` (``'separate'``: a flow per teacher and level;
            ``'shared'``: one flow per level conditioned on
            the teacher, run once on the level stacked per teacher), and
            ``deploy`` (the deployed teacher or ``'mean'``). Losses and, in
            mode 'flow', the levels the heads read weigh the teachers by
            their weights; ``flow_l{l}_t{j}`` logs each teacher's flow loss.

    Each group also takes its earlier flat keys (``level_weights``,
    ``deploy_mode``, ``ema_momentum``, ``teacher_flows``, ...; see
    :data:`~fmkt_mm.distill.level_options.FLAT_KEYS`).
    """

    #: the defaults of the grouped options (a segmentation subclass has its own)
    defaults = LevelDistillerOptions()
    #: the data-sample field the student's ``predict`` fills
    prediction_field: str

    def __init__(self, student: dict, teacher: Optional[dict] = None, flow: Optional[dict] = None,
                 levels: Optional[Union[dict, Sequence]] = None, deploy: Optional[dict] = None,
                 teachers: Optional[Union[dict, Sequence[dict]]] = None, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None, **flat: Any) -> None:
        options = group_options(flow, levels, deploy, teachers, self.defaults, **flat)
        opts_levels, opts_deploy, opts_teachers = options.levels, options.deploy, options.teachers
        if teacher is None and opts_teachers.models is None:
            raise ValueError(f'{type(self).__name__} needs a teacher: teacher=dict(config=..., checkpoint=...) '
                             'or teachers=[dict(config=..., checkpoint=...), ...]')
        super().__init__(student, teacher, data_preprocessor, init_cfg, teachers=opts_teachers.models,
                         teacher_flows=opts_teachers.flows, deploy_teacher=opts_teachers.deploy)
        self._deploy_mode = opts_deploy.mode
        self.theta_loss_weight = opts_deploy.theta_loss_weight
        student_shapes, teacher_shapes = self.setup_levels(
            opts_levels.pairs, opts_levels.weights, opts_levels.student_tap, opts_levels.teacher_tap,
            opts_levels.dummy_input_shape, opts_levels.teacher_norm)
        self.setup_raw_levels(opts_levels.raw_pairs, opts_levels.raw_weights, opts_levels.weights,
                              student_shapes, teacher_shapes)
        flow_cfg = self._flow_config(options)
        self._build_flows(options, flow_cfg, student_shapes, teacher_shapes)
        self.theta_loss = None
        if self.deploy_mode == 'student':
            self.theta_loss = build_from_registry(MODELS, opts_deploy.theta_loss or flow_cfg['loss'], 'loss')
        self.setup_ema(opts_deploy.ema_momentum, opts_deploy.ema_warmup)
        self.eval_steps = opts_deploy.eval_steps or self.flows[0].num_steps
        #: extra step counts predicted in the same pass (set_eval_steps):
        #: each sample gets ``pred_instances_steps{N}`` besides ``pred_instances``
        self.extra_eval_steps: List[int] = []
        #: per-level multipliers of the level weights (set_level_scales)
        self.level_scales: List[float] = [1.0] * len(self.level_pairs)
        self.roundtrip_loss_weight = check_roundtrip_weight(options.flow_extras.roundtrip_loss_weight, self.flows)
        self.batch_levels = options.flow_extras.batch_levels
        if self.batch_levels:
            self.flows.check_batchable()
        self.raw_loss_weight = opts_levels.raw_loss_weight
        self.raw_loss = None
        if self.raw_loss_weight > 0 or self.raw_pairs:
            self.raw_loss = build_from_registry(MODELS, opts_levels.raw_loss or flow_cfg['loss'], 'loss')

    # -- building ----------------------------------------------------------------
    def _flow_config(self, options: LevelDistillerOptions) -> dict:
        flow = dict(options.flow)
        flow.setdefault('num_steps', 4)
        flow.setdefault('encoder', dict(type='conv', num_blocks=1))
        flow.setdefault('loss', dict(type='PKDLoss'))
        return flow

    def _build_flows(self, options: LevelDistillerOptions, flow_cfg: dict, student_shapes,
                     teacher_shapes) -> None:
        """``self.flows`` and ``self.teacher_adapters``: the adapter of each
        teacher ``j`` and level pair ``k`` (identity where the shapes agree),
        teacher-major, owned and applied here. Each separate flow's adapter
        is built just before its flow, a shared flow's after all flows: the
        order fixes the initial weights."""
        flow_cfg = dict(flow_cfg)
        condition_cfg = flow_cfg.pop('condition', None)
        check_level_condition(condition_cfg)
        teachers_share = self.multi_teacher and self.teacher_flows == 'shared'
        if teachers_share:  # one flow per level, told by a teacher embedding which teacher it follows
            condition_cfg = with_teacher_condition(condition_cfg)
        num_teachers = len(self.teacher_models())
        factory = LevelFlowFactory(flow_cfg, self.level_pairs, student_shapes, num_teachers, teachers_share,
                                   options.flow_extras.shared_encoder, condition_cfg)

        def adapter(j: int, k: int) -> nn.Module:
            s, t = self.level_pairs[k]
            return self.level_adapter(options.levels.adapter, s, t, student_shapes[s], teacher_shapes[j][t],
                                      why=self._why(j)) or nn.Identity()

        flows, adapters = [], []
        for j in range(factory.sets):
            factory.start_set()
            for k in range(len(self.level_pairs)):
                if not teachers_share:
                    adapters.append(adapter(j, k))
                flows.append(factory.flow(k))
        self.flows = factory.flows(flows)
        if teachers_share:
            adapters = [adapter(j, k) for j in range(num_teachers) for k in range(len(self.level_pairs))]
        self.teacher_adapters = nn.ModuleList(adapters)
        # the raw pairs' adapters last: with none, the flows' initial weights are as without raw pairs
        self.raw_adapters = nn.ModuleList([
            self.level_adapter(options.levels.adapter, s, t, student_shapes[s], teacher_shapes[j][t],
                               why=self._why(j, 'student level')) or nn.Identity()
            for j in range(num_teachers) for s, t in self.raw_pairs])

    def _why(self, j: int, what: str = "flow's estimates") -> str:
        return f": the {what} cannot be compared with {self.teacher_label(j)}'s" \
            if self.multi_teacher else f": the {what} cannot be compared with the teacher"

    def check_level_scales(self, scales: Sequence[float]) -> None:
        check_scales(scales, len(self.level_pairs))

    @property
    def steps_prediction_field(self) -> Optional[str]:
        """The data-sample field that ``extra_eval_steps`` fill, one per count
        (``pred_instances_steps{N}``), for the evaluator's metrics to score;
        ``None`` when prediction does not run the flows."""
        return self.prediction_field if self.deploy_mode == 'flow' else None

    @property
    def deploy_mode(self) -> str:
        """``'flow'`` if prediction runs the flows, ``'student'`` if the plain
        student alone predicts."""
        return self._deploy_mode

    @classmethod
    def deploy_mode_of(cls, cfg: dict) -> str:
        deploy = cfg.get('deploy') or {}  # grouped or flat
        return deploy.get('mode', cfg.get('deploy_mode', cls.defaults.deploy.mode))

    # -- the flows on the levels -------------------------------------------------
    def flow_of(self, j: int, k: int, flows: Optional[LevelFlows] = None) -> FlowTransfer:
        """The flow of level pair ``k`` toward teacher ``j`` (in ``flows``,
        the training flows by default)."""
        return (self.flows if flows is None else flows).flow(j, k)

    def teacher_runs(self, k: int, level: Tensor, num_steps: int, targets: Sequence[Tensor]) -> List[FlowOutput]:
        """One training run of level pair ``k`` per teacher, each run's
        steps in its teacher's shape (``targets`` give the sizes)."""
        outs = self.flows.runs(k, level, num_steps, range(len(targets)))
        return [self._in_teacher_shape(j, k, out, target) for j, (out, target) in enumerate(zip(outs, targets))]

    def _in_teacher_shape(self, j: int, k: int, out: FlowOutput, target: Tensor) -> FlowOutput:
        """``out`` (level pair ``k``) with its steps in teacher ``j``'s shape:
        through the adapter, or unchanged where the shapes agree (a reduced
        flow's steps then stay factors)."""
        if self.teacher_adapter(j, k) is None:
            return out
        return out.with_steps(self.to_teacher_space(j, k, out.estimates, target))

    def distilled_levels(self, levels: Sequence[Tensor], teacher_levels: Sequence[Sequence[Tensor]],
                         losses: Dict[str, Tensor]) -> List[Tensor]:
        """Training: run the flows on the student's levels, put each level's
        losses into ``losses`` and return the levels the heads read."""
        levels = list(levels)
        runs = self._batched_runs(levels, len(teacher_levels)) if self.batch_levels else None
        # deploy mode 'student' with batched levels: every level's theta loss in one call per teacher
        theta_at_once = runs is not None and self.theta_loss is not None and \
            hasattr(self.theta_loss, 'forward_levels')
        for k, (s, t) in enumerate(self.level_pairs):
            weight = self.level_weights[k] * self.level_scales[k]
            targets = [teacher[t] for teacher in teacher_levels]
            outs = self._teacher_shaped(runs, k, targets) if runs is not None else \
                self.teacher_runs(k, levels[s], self.flow_of(0, k).draw_num_steps(), targets)
            ensemble = self._level_losses(k, levels[s], outs, targets, weight, losses, theta=not theta_at_once)
            if ensemble is not None:  # deploy mode 'flow': what the heads read at inference too
                levels[s] = ensemble
        if theta_at_once:
            self._theta_losses_at_once(runs, losses)
        self._raw_level_losses(levels, teacher_levels, losses)
        return levels

    def _raw_level_losses(self, levels: Sequence[Tensor], teacher_levels: Sequence[Sequence[Tensor]],
                          losses: Dict[str, Tensor]) -> None:
        """``loss_raw_l{s}`` of every raw pair (``levels.raw_pairs``): the raw
        loss between the student's level (through its adapter) and each
        teacher's, weighted over the teachers, times the pair's weight. The
        heads read these levels as the student made them."""
        weights = self.teacher_weights()
        for k, (s, t) in enumerate(self.raw_pairs):
            per_teacher = [self.raw_loss(self.raw_to_teacher_space(j, k, levels[s], teacher[t]), teacher[t])
                           for j, teacher in enumerate(teacher_levels)]
            losses[f'loss_raw_l{s}'] = self.raw_weights[k] * weighted(per_teacher, weights)

    def _batched_runs(self, levels: Sequence[Tensor], num_teachers: int) -> List[BatchedRun]:
        """``flow.batch_levels``: one run of every level pair per teacher (one
        step count drawn for all)."""
        n = self.flow_of(0, 0).draw_num_steps()
        return [self.flows.batched_runs(j, [levels[s] for s, _ in self.level_pairs], n) for j in range(num_teachers)]

    def _teacher_shaped(self, runs: Sequence[BatchedRun], k: int, targets: Sequence[Tensor]) -> List[FlowOutput]:
        """Level pair ``k``'s output of each teacher's batched run, its steps in that teacher's shape."""
        return [self._in_teacher_shape(j, k, run.outputs[k], target)
                for j, (run, target) in enumerate(zip(runs, targets))]

    def _theta_losses_at_once(self, runs: Sequence[BatchedRun], losses: Dict[str, Tensor]) -> None:
        """``loss_theta_l{l}`` of every level pair from one call of the theta
        loss per teacher on the batched run's tokens (``forward_levels``,
        e.g. :meth:`PKDLoss.forward_levels <fmkt_mm.losses.PKDLoss.forward_levels>`):
        the values of the per-level calls, in a fixed number of operators."""
        scale = [self.level_weights[k] * self.level_scales[k] * self.theta_loss_weight
                 for k in range(len(self.level_pairs))]
        per_teacher = []
        for run in runs:
            with torch.no_grad():
                ensemble = run.mean_estimate()
            per_teacher.append(self.theta_loss.forward_levels(run.tokens.flatten(2), ensemble.flatten(2),
                                                              run.counts, scale))
        values = weighted(per_teacher, self.teacher_weights())
        for (s, _), value in zip(self.level_pairs, values.unbind()):
            losses[f'loss_theta_l{s}'] = value

    def _level_losses(self, k: int, level: Tensor, outs: List[FlowOutput], targets: Sequence[Tensor],
                      weight: float, losses: Dict[str, Tensor], theta: bool = True) -> Optional[Tensor]:
        """Level pair ``k``'s losses (see :meth:`loss`; in deploy mode
        'student', the theta loss unless ``theta`` is False); returns the
        deployed ensemble in deploy mode 'flow', else None."""
        s = self.level_pairs[k][0]
        weights = self.teacher_weights()
        per_teacher = [self.flow_of(j, k).step_losses(out, target)  # (N,), one loss call each
                       for j, (out, target) in enumerate(zip(outs, targets))]
        step_losses = weighted(per_teacher, weights)
        losses[f'loss_flow_l{s}'] = weight * step_losses.sum()
        if self.roundtrip_loss_weight > 0:
            losses[f'loss_roundtrip_l{s}'] = self.roundtrip_loss_weight * weighted(
                [self.flow_of(j, k).roundtrip_loss(level, out) for j, out in enumerate(outs)], weights)
        if self.raw_loss is not None:
            losses[f'loss_raw_l{s}'] = weight * self.raw_loss_weight * weighted(
                [self.raw_loss(self.to_teacher_space(j, k, level, target), target)
                 for j, target in enumerate(targets)], weights)
        losses[f'flow_l{s}_step'] = scaled(step_losses, len(step_losses))  # logged only, per step
        if self.multi_teacher:  # each teacher's flow loss on the level, logged only
            for j, values in enumerate(per_teacher):
                losses[f'flow_l{s}_t{j}'] = values.detach().sum()
        if self.deploy_mode == 'flow':
            chosen, chosen_weights = self.deployed_teachers()
            return weighted([outs[j].mean_estimate() for j in chosen], chosen_weights)
        if theta:
            losses[f'loss_theta_l{s}'] = weight * self.theta_loss_weight * weighted(
                [self.theta_loss(level, out.mean_estimate().detach()) for out in outs], weights)
        return None

    # -- training ------------------------------------------------------------------
    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        """The student's task losses (its own names) plus, per distilled level
        ``l``: ``loss_flow_l{l}`` (sum over steps, times the level weight),
        ``loss_theta_l{l}`` in deploy mode 'student', ``loss_raw_l{l}`` with
        ``raw_loss_weight`` and on each level of ``raw_pairs``, and the per-step values
        ``flow_l{l}_step{k}`` (logged only)."""
        self.check_ema_driven()
        teacher_levels = [self.teacher_levels(inputs, data_samples, j)
                          for j in range(len(self.teacher_models()))]
        distilled: Dict[str, Tensor] = {}
        with rewrite_tap(self.student, self.student_tap,
                         lambda levels: self.distilled_levels(levels, teacher_levels, distilled)):
            losses = dict(self.student.loss(inputs, data_samples))
        clash = set(losses) & set(distilled)
        if clash:
            raise RuntimeError(f'the student\'s losses {sorted(clash)} collide with the distiller\'s')
        losses.update(distilled)
        return losses

    def task_losses(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        """Distillation switched off: the task losses of the deployed model.
        In deploy mode ``'flow'`` the flows' ensemble still replaces the
        distilled levels (and the EMA keeps following); in ``'student'`` the
        plain student trains alone."""
        if self.deploy_mode != 'flow':
            return super().task_losses(inputs, data_samples)
        self.check_ema_driven()
        with rewrite_tap(self.student, self.student_tap, self.deployed_levels):
            return dict(self.student.loss(inputs, data_samples))

    @torch.no_grad()
    def roundtrip_errors(self, inputs: Tensor, data_samples: Optional[list] = None,
                         num_steps: Optional[int] = None, refine: int = 0) -> Dict[str, RoundTrip]:
        """Invertibility of each level's flow (the EMA flows in eval mode when
        kept) on a batch: ``'s2t2s_l{l}'`` (student level -> teacher space ->
        back) and ``'t2s2t_l{l}'`` (teacher level -> student space ->
        forward again), plus their sums over levels, ``'s2t2s'`` and
        ``'t2s2t'`` (through an adapter, the flow's own teacher-space
        images). ``num_steps`` defaults to ``eval_steps``; with several
        teachers, each teacher's flow is keyed ``'..._l{l}_t{j}'``."""
        out = run_until_tapped(self.student, [self.student_tap],
                               lambda: self.student(inputs, data_samples, mode='tensor'), 'student')
        levels = as_levels(out[self.student_tap], self.student_tap, 'student')
        flows, teachers = self._inference_flows(), {}  # teacher j's levels, read where compared in the flow's space
        errors: Dict[str, RoundTrip] = {}
        for k, (s, t) in enumerate(self.level_pairs):
            for j in range(len(self.teacher_models())):
                x_teacher = None  # through an adapter the teacher is in another space
                if self.teacher_adapter(j, k) is None:  # each teacher's levels read once
                    teachers[j] = teachers.get(j) or self.teacher_levels(inputs, data_samples, j)
                    x_teacher = teachers[j][t]
                level = flows.roundtrip(j, k, levels[s], num_steps or self.eval_steps, x_teacher, refine)
                suffix = f'_l{s}_t{j}' if self.multi_teacher else f'_l{s}'
                for key, value in level.items():
                    errors[key + suffix] = value
                    errors[key] = errors[key] + value if key in errors else value
        return errors
