"""FM-KT for mmdet detectors (feature-based, one flow per FPN level).

The flows sit between the student's neck and its head, so the distiller
works for any detector with a neck (one-stage, two-stage, anchor-free)
without knowing its head::

    student.backbone -> student.neck -> (hook: flows) -> student heads
                                            |
    teacher.backbone -> teacher.neck  ------+  (teacher's forward stops here)

A forward hook on the student's ``student_tap`` module (``neck``) receives
the tuple of levels ``(B, C_l, H_l, W_l)``. For every distilled level ``l``
a :class:`~fmkt_mm.flow.FlowTransfer` in the student's channel space carries
the level toward the teacher's level in ``N`` serial steps; each step's
endpoint estimate is mapped into the teacher's shape (by an adapter, or
unchanged when the shapes match) and compared with the teacher's feature by
the flow's metric loss (PKD by default). The hook then returns the tuple the
student's heads read:

* ``deploy_mode='flow'`` (the paper's setting): the flows' implicit ensemble
  (mean of the endpoint estimates, in the student's space) replaces each
  distilled level, in training and at inference. The deployed model is the
  student plus its flows.
* ``deploy_mode='student'`` (zero inference cost): the heads read the raw
  student levels; an extra loss pulls each raw level toward the detached
  ensemble, ``D(X_S, stopgrad(mean_i Xhat_i))``. Inference is the unchanged
  student and :meth:`student_state_dict` is a plain detector checkpoint.

The student's own ``loss``/``predict`` then run unchanged, so the task losses
keep their mmdet names and ``predict`` returns mmdet ``DetDataSample`` s.

FlowDistill options:

* ``flow=dict(..., condition=dict(type='pooled' | 'level'))``: conditional
  flows; each level's flow conditions on its pooled level and/or a learned
  level embedding. With ``shared_encoder=True`` all levels share one
  meta-encoder (and one condition), which the level embedding tells which
  level it transports.
* :attr:`DetectionDistiller.level_scales` (set by
  :class:`~fmkt_mm.hooks.ProgressiveDistillationHook`): per-level multipliers
  of ``level_weights``, for a coarse-to-fine schedule (0 switches a level's
  distillation loss off; its flow still runs, so every parameter keeps a
  gradient).
* ``roundtrip_loss_weight`` and :meth:`DetectionDistiller.roundtrip_errors`:
  cycle consistency and invertibility of each level's flow.
"""
import copy
import math
import warnings
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..flow import ENCODERS, FlowOutput, FlowTransfer, RoundTrip, build_condition
from ..flow.conditions import ClassCondition
from ..losses.base import scaled
from ..registry import MODELS
from ..utils import build_from_registry
from .levels import LevelDistiller, LevelSpec, TeacherShape, as_levels
from .taps import get_module, run_until_tapped
from .teacher import stack_for_teachers, weighted, with_teacher_condition

DEPLOY_MODES = ('flow', 'student')

class _HookState:
    """What the neck hook needs for one call and what it leaves behind."""

    def __init__(self, teacher_levels: Optional[Sequence[Sequence[Tensor]]], compute_losses: bool,
                 num_steps: Optional[int] = None):
        self.teacher_levels = teacher_levels
        self.compute_losses = compute_losses
        self.num_steps = num_steps
        self.losses: Dict[str, Tensor] = {}
        self.calls = 0
        #: the tap's own output (before the flows), kept for reuse
        self.raw_levels: Optional[List[Tensor]] = None


@MODELS.register_module()
class DetectionDistiller(LevelDistiller):
    """Distils an mmdet detector with FM-KT, one flow per FPN level.

    Args:
        student, teacher, data_preprocessor, init_cfg: see
            :class:`BaseDistiller`. The student is any mmdet detector whose
            ``student_tap`` module returns a tuple of ``(B, C, H, W)`` levels.
        flow: :class:`~fmkt_mm.flow.FlowTransfer` arguments shared by all
            levels (``path``, ``encoder``, ``num_steps``, ``loss``, ...);
            ``channels`` is inferred per level. Defaults: 4 steps, a
            one-block ``conv`` meta-encoder, ``PKDLoss``.
        levels: distilled levels. An int ``l`` pairs student level ``l``
            with teacher level ``l``; a pair ``(s, t)`` pairs student level
            ``s`` with teacher level ``t`` (necks with different level
            counts). Default: the first four, as in the paper.
        level_weights: weight of each level's flow loss (the sum over its
            steps); a float for all levels or one per level. The paper uses
            10 for RetinaNet and 6 for Faster R-CNN.
        student_tap / teacher_tap: module paths whose outputs are the levels
            (``'neck'``). The teacher's forward stops after its tap, so its
            heads never run.
        deploy_mode: ``'flow'`` (heads read the flows' ensemble) or
            ``'student'`` (heads read the raw student; zero inference cost).
        adapter: config of the module mapping a student level to the teacher
            level's shape (``in_channels`` / ``out_channels`` are filled in
            per level and it is called as ``adapter(x, size=(H_t, W_t))``),
            e.g. ``dict(type='FeatureAdapter')``. Required when a pair of
            levels differs in channels or spatial size; None otherwise (the
            estimate is compared with the teacher directly).
        theta_loss: metric loss of ``deploy_mode='student'`` that pulls the
            raw student level toward the detached ensemble; defaults to the
            flow's loss. ``theta_loss_weight`` multiplies it (on top of the
            level weight).
        eval_steps: flow steps at inference in ``deploy_mode='flow'``
            (defaults to the training ``num_steps``).
        ema_momentum: if set, an exponential moving average of the flows
            (weight ``ema_momentum`` for the new weights, MMEngine's
            convention, e.g. ``0.0002``-``0.001``) is kept and used for
            inference in ``deploy_mode='flow'``. It absorbs the flows'
            weights at the start of each training forward, i.e. after the
            previous optimizer update.
        ema_warmup: the EMA's momentum warms up as in mmdet's
            ``ExpMomentumEMA``: update ``k`` (from 1) uses
            ``m_k = (1 - m) * exp(-k / ema_warmup) + m``, so early in training
            the EMA follows the flows closely (a short run evaluates trained
            flows, not the initial ones) and it settles at ``ema_momentum``
            after a few times ``ema_warmup`` updates. The update count is a
            buffer (``ema_updates``): resuming continues the warm-up. ``None``:
            the constant momentum from the first update.
        dummy_input_shape: ``(C, H, W)`` of the zero batch used at build time
            to read both necks' level shapes (a multiple of the largest
            stride).
        shared_encoder: one meta-encoder (and one condition) for all
            distilled levels instead of one per level; the levels must have
            equal channels. Pair it with ``flow.condition=dict(type='level')``.
        roundtrip_loss_weight: weight of each level's cycle-consistency loss
            ``loss_roundtrip_l{l}`` (0: off).
        raw_loss_weight / raw_loss: FM-KT plus direct feature distillation:
            ``loss_raw_l{l}``, the metric loss ``raw_loss`` (default: the
            flow's, e.g. PKD) between each raw student level (mapped by the
            level's adapter where the shapes differ) and the teacher's level,
            times the level weight and ``raw_loss_weight`` (0: off). With a
            PKD loss this adds the PKD baseline's term to the flows'.
        teachers, teacher_flows, deploy_teacher: several teachers (see
            :class:`BaseDistiller`), each with its own tap, level shapes
            and adapters. ``'separate'``: a flow per teacher and level (teacher
            ``j``'s are ``flows[j * L:(j + 1) * L]``), the adapter its head;
            ``'shared'``: one flow per level conditioned on the teacher, run
            once on the level stacked per teacher, then each teacher's
            adapter (``teacher_adapters``). Each level's flow loss, theta loss
            and (deploy mode 'flow') the levels the heads read weigh the
            teachers by their weights; ``flow_l{l}_t{j}`` logs each teacher's
            flow loss.

    ``flow`` may hold ``condition`` (see the module docstring); the
    condition's ``channels`` and ``num_levels`` are filled in.
    """

    def __init__(self,
                 student: dict,
                 teacher: Optional[dict] = None,
                 flow: Optional[dict] = None,
                 levels: Sequence[LevelSpec] = (0, 1, 2, 3),
                 level_weights: Union[float, Sequence[float]] = 1.0,
                 student_tap: str = 'neck',
                 teacher_tap: str = 'neck',
                 deploy_mode: str = 'flow',
                 adapter: Optional[Union[str, dict]] = None,
                 theta_loss: Optional[dict] = None,
                 theta_loss_weight: float = 1.0,
                 eval_steps: Optional[int] = None,
                 ema_momentum: Optional[float] = None,
                 ema_warmup: Optional[int] = 2000,
                 dummy_input_shape: Sequence[int] = (3, 128, 128),
                 shared_encoder: bool = False,
                 roundtrip_loss_weight: float = 0.0,
                 raw_loss_weight: float = 0.0,
                 raw_loss: Optional[dict] = None,
                 teachers: Optional[Sequence[dict]] = None,
                 teacher_flows: str = 'separate',
                 deploy_teacher: Union[str, int] = 'mean',
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if deploy_mode not in DEPLOY_MODES:
            raise ValueError(f'unknown deploy_mode {deploy_mode!r}; choose one of {list(DEPLOY_MODES)}')
        if teacher is None and teachers is None:
            raise ValueError('DetectionDistiller needs a teacher: teacher=dict(config=..., checkpoint=...) '
                             'or teachers=[dict(config=..., checkpoint=...), ...]')
        if ema_momentum is not None and not 0.0 < ema_momentum <= 1.0:
            raise ValueError(f'ema_momentum must lie in (0, 1] (the weight of the new weights), '
                             f'got {ema_momentum}')
        if ema_warmup is not None and not ema_warmup > 0:
            raise ValueError(f'ema_warmup must be a positive number of updates or None, got {ema_warmup}')
        super().__init__(student, teacher, data_preprocessor, init_cfg, teachers=teachers,
                         teacher_flows=teacher_flows, deploy_teacher=deploy_teacher)
        self._deploy_mode = deploy_mode
        self.theta_loss_weight = theta_loss_weight
        student_shapes, teacher_shapes = self.setup_levels(levels, level_weights, student_tap,
                                                           teacher_tap, dummy_input_shape)

        flow = dict(flow or {})
        if flow.pop('channels', None) is not None:
            raise ValueError('flow.channels is inferred per level from the student; remove it')
        if 'head' in flow:
            raise ValueError('flow.head is the per-level adapter; configure `adapter` instead')
        flow.setdefault('num_steps', 4)
        flow.setdefault('encoder', dict(type='conv', num_blocks=1))
        flow.setdefault('loss', dict(type='PKDLoss'))
        condition_cfg = flow.pop('condition', None)
        encoder_cfg = flow.pop('encoder')
        self._check_detection_condition(condition_cfg)
        num_teachers = len(self.teacher_models())
        shared_teachers = self.multi_teacher and teacher_flows == 'shared'
        if shared_teachers:  # one flow per level, told by a teacher embedding which teacher it follows
            condition_cfg = with_teacher_condition(condition_cfg)
        num_pairs = len(self.level_pairs)

        def make_condition(channels):
            return build_condition(condition_cfg, channels, num_levels=num_pairs,
                                   num_teachers=num_teachers)

        def make_flows(j: int) -> List[FlowTransfer]:
            """The level flows toward teacher ``j`` (toward every teacher when shared)."""
            shared_condition = shared = None
            if shared_encoder:
                channels = sorted({student_shapes[s][1] for s, _ in self.level_pairs})
                if len(channels) > 1:
                    raise ValueError(f'shared_encoder=True needs equal channels on every distilled '
                                     f'student level, got {channels}; distil levels of one width or '
                                     f'set shared_encoder=False')
                shared_condition = make_condition(channels[0])
                context = {} if shared_condition is None else dict(context_dim=shared_condition.dim)
                shared = ENCODERS.build(encoder_cfg, channels=channels[0], **context)
            flows = []
            for k, (s, t) in enumerate(self.level_pairs):
                head = None
                if not shared_teachers:  # the teacher's adapter is the flow's head
                    head = self.level_adapter(adapter, s, t, student_shapes[s], teacher_shapes[j][t],
                                              why=self._why(j))
                if shared is not None:
                    condition, encoder = shared_condition, shared
                else:
                    condition, encoder = make_condition(student_shapes[s][1]), encoder_cfg
                flows.append(FlowTransfer(channels=student_shapes[s][1], head=head, encoder=encoder,
                                          condition=condition, condition_level=k, **flow))
            return flows

        #: one flow per entry of ``level_pairs``; with several teachers and
        #: separate flows, teacher ``j``'s flows are ``flows[j * len(level_pairs):]``
        self.flows = nn.ModuleList([f for j in range(1 if shared_teachers else num_teachers)
                                    for f in make_flows(j)])
        #: several teachers sharing the flows: each teacher's adapters
        #: (identity where shapes agree), in the same order
        self.teacher_adapters = None
        if shared_teachers:
            self.teacher_adapters = nn.ModuleList([
                self.level_adapter(adapter, s, t, student_shapes[s], teacher_shapes[j][t],
                                   why=self._why(j)) or nn.Identity()
                for j in range(num_teachers) for s, t in self.level_pairs])
        self.theta_loss = None
        if deploy_mode == 'student':
            self.theta_loss = build_from_registry(MODELS, theta_loss or flow['loss'], 'loss')
        self.ema_momentum = ema_momentum
        self.ema_flows = None
        if ema_momentum is not None:
            if deploy_mode == 'student':
                warnings.warn("ema_momentum is ignored with deploy_mode='student': inference does "
                              'not run the flows')
                self.ema_momentum = None
            else:
                self.ema_flows = copy.deepcopy(self.flows).requires_grad_(False).eval()
                self.register_buffer('ema_updates', torch.zeros((), dtype=torch.long))
        self.ema_warmup = ema_warmup
        self.eval_steps = eval_steps or self.flows[0].num_steps
        #: extra step counts predicted in the same pass (set_eval_steps):
        #: each sample gets ``pred_instances_steps{N}`` besides ``pred_instances``
        self.extra_eval_steps: List[int] = []
        #: per-level multipliers of ``level_weights`` (set_level_scales)
        self.level_scales: List[float] = [1.0] * len(self.level_pairs)
        if roundtrip_loss_weight < 0:
            raise ValueError(f'roundtrip_loss_weight must be >= 0, got {roundtrip_loss_weight}')
        self.roundtrip_loss_weight = roundtrip_loss_weight
        if raw_loss_weight < 0:
            raise ValueError(f'raw_loss_weight must be >= 0, got {raw_loss_weight}')
        self.raw_loss_weight = raw_loss_weight
        self.raw_loss = None
        if raw_loss_weight > 0:
            self.raw_loss = build_from_registry(MODELS, raw_loss or flow['loss'], 'loss')

    def check_level_scales(self, scales: Sequence[float]) -> None:
        if not isinstance(scales, (list, tuple)) or len(scales) != len(self.level_pairs) or \
                any(not isinstance(s, (int, float)) or s < 0 for s in scales):
            raise ValueError(f'level scales {list(scales) if isinstance(scales, (list, tuple)) else scales!r}'
                             f' have {len(scales) if isinstance(scales, (list, tuple)) else "no"} '
                             f'entries for {len(self.level_pairs)} distilled levels; give one '
                             f'multiplier >= 0 per level')

    #: the data-sample field the student's ``predict`` fills (mmdet's)
    prediction_field = 'pred_instances'

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
        return cfg.get('deploy_mode', 'flow')

    # -- building ----------------------------------------------------------------
    def _why(self, j: int) -> str:
        return f": the flow's estimates cannot be compared with {self.teacher_label(j)}'s" \
            if self.multi_teacher else ": the flow's estimates cannot be compared with the teacher"

    @staticmethod
    def _check_detection_condition(cfg):
        items = cfg if isinstance(cfg, (list, tuple)) else [cfg]
        for item in items:
            name = item.get('type') if isinstance(item, dict) else item
            if isinstance(item, ClassCondition) or (isinstance(name, str) and (
                    name.split('.')[-1] in ('class', 'ClassCondition'))):
                raise ValueError("condition type 'class' conditions a classifier's flow on the image's "
                                 "class; a detection level holds many objects: use 'pooled' and/or "
                                 "'level'")

    # -- the neck hook -------------------------------------------------------------
    def _inference_flows(self) -> nn.ModuleList:
        return self.ema_flows if self.ema_flows is not None and not self.training else self.flows

    def flow_of(self, j: int, k: int, flows: Optional[nn.ModuleList] = None) -> FlowTransfer:
        """The flow of level pair ``k`` toward teacher ``j`` (in ``flows``,
        the training flows by default)."""
        flows = self.flows if flows is None else flows
        separate = self.multi_teacher and self.teacher_flows == 'separate'
        return flows[j * len(self.level_pairs) + k if separate else k]

    def level_runs(self, k: int, level: Tensor, num_steps: int, targets: Sequence[Tensor],
                   flows: Optional[nn.ModuleList] = None) -> List[FlowOutput]:
        """One training run of level pair ``k`` per teacher, each run's
        steps in its teacher's shape (``targets`` give the sizes): separate
        flows run in turn, a shared flow once on the level stacked per
        teacher, its estimates then mapped by each teacher's adapter."""
        if self.teacher_adapters is None:
            outs = []
            for j, target in enumerate(targets):
                flow = self.flow_of(j, k, flows)
                if isinstance(flow.head, TeacherShape):
                    flow.head.size = tuple(target.shape[-2:])
                outs.append(flow.run(level, num_steps))
            return outs
        flow = self.flow_of(0, k, flows)
        stacked, _, context = stack_for_teachers(flow, level, range(len(targets)))
        outs = flow.run(stacked, num_steps, context).split(len(targets))
        for j, (out, target) in enumerate(zip(outs, targets)):
            adapter = self.teacher_adapter(j, k)
            if isinstance(adapter, TeacherShape):
                adapter.size = tuple(target.shape[-2:])
                n, b = out.estimates.shape[:2]
                steps = adapter(out.estimates.flatten(0, 1)).unflatten(0, (n, b))
                outs[j] = FlowOutput(estimates=out.estimates, steps=steps, context=out.context)
        return outs

    def teacher_adapter(self, j: int, k: int, flows: Optional[nn.ModuleList] = None) -> nn.Module:
        """The module mapping student space to teacher ``j``'s at level pair
        ``k``: the flow's head (in ``flows``, the training flows by default),
        or with a shared flow the teacher's entry of ``teacher_adapters``. A
        :class:`TeacherShape` where the shapes differ."""
        if self.teacher_adapters is None:
            return self.flow_of(j, k, flows).head
        return self.teacher_adapters[j * len(self.level_pairs) + k]

    def to_teacher_space(self, j: int, k: int, x: Tensor, target: Tensor) -> Tensor:
        """``x`` (student space, level pair ``k``) in teacher ``j``'s shape
        (``target``'s): through :meth:`teacher_adapter`, or as it is where
        the shapes agree."""
        adapter = self.teacher_adapter(j, k)
        if not isinstance(adapter, TeacherShape):
            return x
        adapter.size = tuple(target.shape[-2:])
        return adapter(x)

    def deployed_ensemble(self, k: int, level: Tensor, num_steps: int) -> Tensor:
        """What the heads read for level pair ``k`` at inference: the
        implicit ensemble (student space) of the deployed teacher's flow, or
        the weighted mean over all teachers' flows."""
        flows = self._inference_flows()
        if not self.multi_teacher:
            return self.flow_of(0, k, flows).transport(level, num_steps)[0].mean(0)
        teachers, weights = self.deployed_teachers()
        if self.teacher_adapters is None:
            ensembles = [self.flow_of(j, k, flows).transport(level, num_steps)[0].mean(0)
                         for j in teachers]
        else:
            flow = self.flow_of(0, k, flows)
            stacked, _, context = stack_for_teachers(flow, level, teachers)
            ensembles = flow.transport(stacked, num_steps, context)[0].mean(0).chunk(len(teachers))
        return weighted(ensembles, weights)

    def _transfer(self, levels: List[Tensor], state: _HookState) -> List[Tensor]:
        """Run the flows on the student's levels; return what the heads read."""
        levels = list(levels)
        if not state.compute_losses:  # inference in deploy_mode 'flow': no adapter, no loss
            steps = state.num_steps or self.eval_steps
            for k, (s, _) in enumerate(self.level_pairs):
                levels[s] = self.deployed_ensemble(k, levels[s], steps)
            return levels
        weights = self.teacher_weights()
        for k, ((s, t), weight, scale) in enumerate(zip(self.level_pairs, self.level_weights,
                                                        self.level_scales)):
            weight = weight * scale
            targets = [teacher[t] for teacher in state.teacher_levels]
            outs = self.level_runs(k, levels[s], self.flow_of(0, k).draw_num_steps(), targets)
            per_teacher = [self.flow_of(j, k).step_loss_vector(out, target)  # (N,), one loss call each
                           for j, (out, target) in enumerate(zip(outs, targets))]
            step_losses = weighted(per_teacher, weights)
            state.losses[f'loss_flow_l{s}'] = weight * step_losses.sum()
            if self.roundtrip_loss_weight > 0:
                state.losses[f'loss_roundtrip_l{s}'] = self.roundtrip_loss_weight * weighted(
                    [self.flow_of(j, k).roundtrip_loss(levels[s], out) for j, out in enumerate(outs)],
                    weights)
            if self.raw_loss is not None:
                state.losses[f'loss_raw_l{s}'] = weight * self.raw_loss_weight * weighted(
                    [self.raw_loss(self.to_teacher_space(j, k, levels[s], target), target)
                     for j, target in enumerate(targets)], weights)
            # per step, undivided: logged only (flow_l{s}_step1, ...)
            state.losses[f'flow_l{s}_step'] = scaled(step_losses, outs[0].steps.shape[0])
            if self.multi_teacher:  # each teacher's flow loss on the level, logged only
                for j, values in enumerate(per_teacher):
                    state.losses[f'flow_l{s}_t{j}'] = values.detach().sum()
            ensembles = [out.mean_estimate() for out in outs]
            if self.deploy_mode == 'flow':  # what the heads read at inference too
                chosen, chosen_weights = self.deployed_teachers()
                levels[s] = weighted([ensembles[j] for j in chosen], chosen_weights)
            else:
                state.losses[f'loss_theta_l{s}'] = weight * self.theta_loss_weight * weighted(
                    [self.theta_loss(levels[s], e.detach()) for e in ensembles], weights)
        return levels

    @contextmanager
    def _flows_on_neck(self, teacher_levels: Optional[Sequence[Sequence[Tensor]]] = None,
                       compute_losses: bool = False,
                       num_steps: Optional[int] = None) -> Iterator[_HookState]:
        """Hook the flows onto the student's tap for the duration of the block
        (at inference with ``num_steps``, by default ``eval_steps``)."""
        state = _HookState(teacher_levels, compute_losses, num_steps)

        def hook(module, inputs, output):
            state.calls += 1
            if state.calls > 1:
                raise RuntimeError(
                    f'the student\'s {self.student_tap!r} ran twice in one forward pass; the '
                    f'distiller expects one call per batch (set student_tap to a module that runs once)')
            state.raw_levels = as_levels(output, self.student_tap, 'student')
            levels = self._transfer(state.raw_levels, state)
            if isinstance(output, Tensor):
                return levels[0]
            return tuple(levels) if isinstance(output, tuple) else levels

        handle = get_module(self.student, self.student_tap, 'student').register_forward_hook(hook)
        try:
            yield state
        finally:
            handle.remove()
        if state.calls == 0:
            raise RuntimeError(f'the student never ran {self.student_tap!r}; tap a module that its '
                               f'forward calls (e.g. neck)')

    # -- EMA of the flows ------------------------------------------------------------
    def ema_momentum_at(self, update: int) -> float:
        """The EMA's momentum at its ``update``-th update (from 1)."""
        if self.ema_warmup is None:
            return self.ema_momentum
        return (1 - self.ema_momentum) * math.exp(-update / self.ema_warmup) + self.ema_momentum

    @torch.no_grad()
    def update_ema(self):
        """``ema = (1 - m) * ema + m * flow`` for every parameter (``m`` warmed
        up, see ``ema_warmup``); buffers are copied."""
        if self.ema_flows is None:
            return
        self.ema_updates += 1
        momentum = self.ema_momentum_at(int(self.ema_updates))
        # one operator for all parameters (and one for all buffers), not one per tensor
        torch._foreach_lerp_(list(self.ema_flows.parameters()), list(self.flows.parameters()), momentum)
        buffers = list(self.flows.buffers())
        if buffers:
            torch._foreach_copy_(list(self.ema_flows.buffers()), buffers)

    # -- training ------------------------------------------------------------------
    def loss(self, inputs: Tensor, data_samples) -> Dict[str, Tensor]:
        """The student's task losses (mmdet names) plus, per distilled level
        ``l``: ``loss_flow_l{l}`` (sum over steps, times the level weight),
        ``loss_theta_l{l}`` in deploy mode 'student', ``loss_raw_l{l}`` with
        ``raw_loss_weight``, and the per-step values
        ``flow_l{l}_step{k}`` (logged only)."""
        if self.training:
            self.update_ema()
        teacher_levels = [self.teacher_levels(inputs, data_samples, j)
                          for j in range(len(self.teacher_models()))]
        with self._flows_on_neck(teacher_levels, compute_losses=True) as state:
            losses = dict(self.student.loss(inputs, data_samples))
        clash = set(losses) & set(state.losses)
        if clash:
            raise RuntimeError(f'the student\'s losses {sorted(clash)} collide with the distiller\'s')
        losses.update(state.losses)
        return losses

    def task_losses(self, inputs: Tensor, data_samples) -> Dict[str, Tensor]:
        """Distillation switched off: mmdet's losses of the deployed model.
        In deploy mode ``'flow'`` the flows' ensemble still replaces the
        distilled levels (and the EMA keeps following); in ``'student'`` the
        plain student trains alone."""
        if self.deploy_mode != 'flow':
            return super().task_losses(inputs, data_samples)
        if self.training:
            self.update_ema()
        with self._flows_on_neck():
            return dict(self.student.loss(inputs, data_samples))

    @torch.no_grad()
    def roundtrip_errors(self, inputs: Tensor, data_samples=None, num_steps: Optional[int] = None,
                         refine: int = 0) -> Dict[str, RoundTrip]:
        """Invertibility of each level's flow (the EMA flows in eval mode when
        kept) on a batch: ``'s2t2s_l{l}'`` (student level -> teacher space ->
        back) and ``'t2s2t_l{l}'`` (teacher level -> student space ->
        forward again), plus their sums over levels, ``'s2t2s'`` and
        ``'t2s2t'``. A level compared through an adapter has its teacher in
        another space; its teacher-space points are then the flow's own
        images. ``num_steps`` defaults to ``eval_steps``. With several
        teachers, each teacher's flow is keyed ``'..._l{l}_t{j}'``."""
        out = run_until_tapped(self.student, [self.student_tap],
                               lambda: self.student(inputs, data_samples, mode='tensor'), 'student')
        levels = as_levels(out[self.student_tap], self.student_tap, 'student')
        flows = self._inference_flows()
        teachers = {}  # teacher j's levels, read where its level is in the flow's space
        errors: Dict[str, RoundTrip] = {}
        for k, (s, t) in enumerate(self.level_pairs):
            for j in range(len(self.teacher_models())):
                flow, x, context, x_teacher = self.flow_of(j, k, flows), levels[s], None, None
                if not isinstance(self.teacher_adapter(j, k, flows), TeacherShape):
                    if j not in teachers:
                        teachers[j] = self.teacher_levels(inputs, data_samples, j)
                    x_teacher = teachers[j][t]
                if self.teacher_adapters is not None:
                    x, _, context = stack_for_teachers(flow, levels[s], [j])
                level = flow.roundtrip(x, num_steps or self.eval_steps, x_teacher=x_teacher,
                                       refine=refine, context=context)
                suffix = f'_l{s}_t{j}' if self.multi_teacher else f'_l{s}'
                for key, value in level.items():
                    errors[key + suffix] = value
                    errors[key] = errors[key] + value if key in errors else value
        return errors

    # -- inference -----------------------------------------------------------------
    def predict(self, inputs: Tensor, data_samples=None):
        """mmdet ``DetDataSample`` s with ``pred_instances``, as the student's.

        With ``extra_eval_steps`` (deploy mode ``'flow'``), each sample also
        gets ``pred_instances_steps{N}``: the detections with the flows' ensemble
        at ``N`` steps; ``pred_instances`` stays the one at ``eval_steps``. The
        backbone and neck run once: for each extra count only the flows and
        the heads run again, on the neck's kept output (through the detector's
        ``extract_feat``, which every mmdet detector's ``predict`` calls once;
        a student tapped elsewhere reruns its whole ``predict`` per count)."""
        if self.deploy_mode == 'student':
            return self.student.predict(inputs, data_samples)
        with self._flows_on_neck() as state:
            samples = self.student.predict(inputs, data_samples)
        counts = [n for n in dict.fromkeys(self.extra_eval_steps) if n != self.eval_steps]
        if not counts:
            return samples
        field = self.prediction_field
        main = [sample.get(field) for sample in samples]  # the samples are reused below
        extra = {}
        for steps in counts:
            if self.student_tap == 'neck' and hasattr(self.student, 'extract_feat'):
                levels = tuple(self._transfer(state.raw_levels, _HookState(None, False, steps)))
                self.student.extract_feat = lambda batch_inputs, levels=levels: levels
                try:
                    again = self.student.predict(inputs, data_samples)
                finally:
                    del self.student.extract_feat
            else:
                with self._flows_on_neck(num_steps=steps):
                    again = self.student.predict(inputs, data_samples)
            extra[steps] = [sample.get(field) for sample in again]
        for k, sample in enumerate(samples):
            setattr(sample, field, main[k])  # through the sample type's own property
            for steps, predictions in extra.items():
                sample.set_field(predictions[k], f'{field}_steps{steps}')
        return samples

    def _forward(self, inputs: Tensor, data_samples=None):
        if self.deploy_mode == 'student':
            return self.student(inputs, data_samples, mode='tensor')
        with self._flows_on_neck():
            return self.student(inputs, data_samples, mode='tensor')
