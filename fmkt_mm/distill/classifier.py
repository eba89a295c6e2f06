"""FM-KT for mmpretrain classifiers (logit-based, the paper's default).

The flow transports the student's last feature map before pooling (the
output of ``student_tap``, by default ``backbone``) and every step's estimate
goes through a classifier tail (neck + head) to logits, compared with the
teacher's logits (the output of ``teacher_tap``, by default ``head``).

Deploy modes (one name for one idea, as in the detection distiller):

* ``deploy_mode='flow'`` (FM-KT): the tail is the student's own neck and
  head; prediction is the implicit ensemble of the flow's steps
  (``eval_steps`` of them).
* ``deploy_mode='student'`` (FM-KT^Theta, zero inference cost): the flow
  gets its own copy of the tail; the student's head is trained on the raw
  feature with ``theta_loss(student logits, stopgrad(ensemble))`` plus its
  task loss, and inference runs the plain student.
* ``online=True`` (OFM-KT, no teacher; deploys the student): as
  FM-KT^Theta, but each step's target is the flow's own detached ensemble.

The earlier ``variant='fmkt' | 'fmkt_theta' | 'ofmkt'`` is accepted as an
alias of these.

FlowDistill options (every mode):

* ``flow=dict(..., condition=dict(type='pooled' | 'class' | 'task'))``: a
  conditional flow network (:mod:`fmkt_mm.flow.conditions`); ``channels``
  and ``num_classes`` are filled in.
* :attr:`curriculum_fraction` (set by
  :class:`~fmkt_mm.hooks.ProgressiveDistillationHook`): only the easiest
  fraction of each batch, ranked by the teacher's confidence (the ensemble's
  for ``ofmkt``), receives the distillation loss; the task loss sees all.
* ``roundtrip_loss_weight``: cycle consistency of the flow
  (:meth:`~fmkt_mm.flow.FlowTransfer.roundtrip_loss`), and
  :meth:`ClassificationDistiller.roundtrip_errors` measures invertibility
  (logged by :class:`~fmkt_mm.hooks.FlowRoundTripHook`).
"""
import copy
import math
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from ..flow import FlowOutput, FlowTransfer, RoundTrip, build_condition
from ..flow.conditions import with_teacher_condition
from ..losses.base import scaled
from ..registry import MODELS
from ..utils import build_from_registry
from .base import BaseDistiller, check_roundtrip_weight, hard_labels
from .classification_options import ClassifierTail, resolve_mode
from .level_flows import LevelFlows
from .taps import run_until_tapped, select
from .teacher import weighted


@MODELS.register_module()
class ClassificationDistiller(BaseDistiller):
    """Distils an mmpretrain ``ImageClassifier`` with FM-KT.

    Args:
        student, teacher, data_preprocessor: see :class:`BaseDistiller`.
        deploy_mode: ``'flow'`` (predict with the flow's ensemble) or
            ``'student'`` (FM-KT^Theta: the plain student predicts).
        online: OFM-KT, no teacher (with ``deploy_mode='student'``).
        variant: the earlier name of a mode (``'fmkt'``, ``'fmkt_theta'``,
            ``'ofmkt'``), accepted for old configs.
        flow: :class:`~fmkt_mm.flow.FlowTransfer` arguments (``path``,
            ``encoder``, ``num_steps``, ``loss``, ...); ``channels`` is
            inferred from a dummy forward when omitted.
        flow_loss_weight: weight of the summed per-step metric losses.
        theta_loss: metric loss of the plain head against the ensemble
            (``fmkt_theta`` / ``ofmkt``); defaults to the flow's loss.
        student_tap / teacher_tap: module paths of the student feature map and
            of the teacher's logits.
        eval_steps: flow steps used by ``predict`` (defaults to the training
            ``num_steps``); :class:`~fmkt_mm.hooks.FlowStepsHook` changes it.
        dummy_input_shape: ``(C, H, W)`` of the dummy batch used to infer the
            feature channels.
        roundtrip_loss_weight: weight of the flow's cycle-consistency loss
            ``||reverse(run(X_S)) - X_S||^2 / ||X_S||^2`` (0: off; it costs
            ``N`` extra meta-encoder calls per iteration).

        teachers, teacher_flows, deploy_teacher: several teachers (see
            :class:`BaseDistiller`): each teacher's logits are a target of
            its flow (``'separate'``) or of the one flow conditioned on the
            teacher (``'shared'``: a ``'teacher'`` condition is added, and the
            flow runs once on the batch stacked per teacher). The flow losses,
            the theta losses and the curriculum's ranking weigh the teachers
            by their weights; every flow step is also a classifier.

    ``flow`` may hold ``condition`` (see the module docstring).
    """

    def __init__(self,
                 student: dict,
                 teacher: Optional[dict] = None,
                 deploy_mode: Optional[str] = None,
                 online: Optional[bool] = None,
                 variant: Optional[str] = None,
                 flow: Optional[dict] = None,
                 flow_loss_weight: float = 1.0,
                 theta_loss: Optional[dict] = None,
                 theta_loss_weight: float = 1.0,
                 student_tap: str = 'backbone',
                 teacher_tap: str = 'head',
                 eval_steps: Optional[int] = None,
                 dummy_input_shape: Sequence[int] = (3, 64, 64),
                 roundtrip_loss_weight: float = 0.0,
                 teachers: Optional[Sequence[dict]] = None,
                 teacher_flows: str = 'separate',
                 deploy_teacher: Union[str, int] = 'mean',
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        deploy_mode, online = resolve_mode(deploy_mode, online, variant)
        has_teacher = teacher is not None or teachers is not None
        if online and has_teacher:
            raise ValueError('online=True (OFM-KT) uses no teacher; remove the teacher or set online=False')
        if not online and not has_teacher:
            raise ValueError(f"deploy_mode={deploy_mode!r} needs a teacher: teacher=dict(config=..., "
                             f"checkpoint=...); for distillation without a teacher set online=True, "
                             f"deploy_mode='student' (OFM-KT)")
        super().__init__(student, teacher, data_preprocessor, init_cfg, teachers=teachers,
                         teacher_flows=teacher_flows, deploy_teacher=deploy_teacher)
        for part in ('backbone', 'head'):
            if getattr(self.student, part, None) is None:
                raise ValueError(f'the student must be an mmpretrain classifier with a {part} '
                                 f'(got {type(self.student).__name__})')
        self._deploy_mode, self.online = deploy_mode, online
        self.student_tap, self.teacher_tap = student_tap, teacher_tap
        self.check_taps([student_tap], [teacher_tap])
        self.flow_loss_weight, self.theta_loss_weight = flow_loss_weight, theta_loss_weight

        flow = dict(flow or {})
        flow.setdefault('loss', dict(type='KDLoss'))
        if flow.get('channels') is None:
            flow['channels'] = self._infer_channels(dummy_input_shape)
        self._build_flows(flow)
        self.theta_loss = None
        if deploy_mode == 'student':
            self.theta_loss = build_from_registry(MODELS, theta_loss or flow['loss'], 'loss')
        #: the theta loss is the flow's metric loss: both run in one call
        self._theta_shares_flow_loss = deploy_mode == 'student' and (
            theta_loss is None or (isinstance(theta_loss, dict) and theta_loss == flow['loss']))
        self._check_shapes(dummy_input_shape)
        self.eval_steps = eval_steps or self.flow_of(0).num_steps
        #: extra step counts evaluated in the same pass (set_eval_steps)
        self.extra_eval_steps: List[int] = []
        self.roundtrip_loss_weight = check_roundtrip_weight(roundtrip_loss_weight, self.flows)
        #: fraction of each batch (easiest first, by teacher confidence) that
        #: receives the distillation loss (set_curriculum)
        self.curriculum_fraction = 1.0

    def _build_flows(self, flow: dict) -> None:
        """``self.flows``: one flow (one teacher, or none), a flow per
        teacher, or one shared by the teachers, reading the student's tail
        (deploy mode 'flow') or a copy of it."""
        flow = dict(flow)
        student_tail = ClassifierTail.of(self.student)
        # 'flow': the student's own classifier reads the flow; 'student': the
        # student's head stays the deployable plain head and the flows get a copy
        flow_tail = student_tail if self.deploy_mode == 'flow' else copy.deepcopy(student_tail)
        condition = flow.pop('condition', None)
        num_classes = getattr(self.student.head, 'num_classes', None)

        def make_flow(condition, num_teachers=1):
            if condition is not None:
                condition = build_condition(condition, flow['channels'], num_levels=1,
                                            num_classes=num_classes, num_teachers=num_teachers)
            return FlowTransfer(head=flow_tail, condition=condition, **flow)

        if not self.multi_teacher:
            self.flows = LevelFlows([make_flow(condition)], 1)
        elif self.teacher_flows == 'separate':  # a flow per teacher, all reading one tail
            self.flows = LevelFlows([make_flow(condition) for _ in self.teacher_models()], 1)
        else:  # one flow, told by a teacher embedding which teacher it carries toward
            self.flows = LevelFlows([make_flow(with_teacher_condition(condition), len(self.teacher_models()))],
                                    1, teachers_share=True)

    def flow_of(self, j: int) -> FlowTransfer:
        """The flow that carries the student toward teacher ``j`` (the one
        flow with one teacher, or shared by all)."""
        return self.flows.flow(j, 0)

    def upgrade_state_dict(self, state: dict, prefix: str = '') -> int:
        """Checkpoints saved while one teacher's flow was ``flow`` (today
        ``flows.0``) load: renamed in place, in the same place of the
        parameter order (returns 0: nothing moved)."""
        for key in [k for k in state if k.startswith(prefix + 'flow.')]:
            state[prefix + 'flows.0.' + key[len(prefix + 'flow.'):]] = state.pop(key)
        return 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.upgrade_state_dict(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def deploy_mode(self) -> str:
        """``'flow'`` if prediction needs the flow, ``'student'`` if the plain
        student alone predicts (FM-KT^Theta, OFM-KT)."""
        return self._deploy_mode

    @classmethod
    def deploy_mode_of(cls, cfg: dict) -> str:
        return resolve_mode(cfg.get('deploy_mode'), cfg.get('online'), cfg.get('variant'))[0]

    @torch.no_grad()
    def _dummy_feature(self, dummy_input_shape) -> Tensor:
        was_training = self.student.training
        self.student.eval()  # a dummy batch must not touch BatchNorm statistics
        try:
            return self.student_feature(torch.zeros(2, *dummy_input_shape))
        finally:
            self.student.train(was_training)

    @torch.no_grad()
    def _check_shapes(self, dummy_input_shape):
        """Fail at build time when the flow's logits cannot meet the teacher's."""
        if self.teacher is None:
            return
        dummy = torch.zeros(2, *dummy_input_shape)
        feature = self._dummy_feature(dummy_input_shape)
        flow = self.flow_of(0)
        was_training = flow.training
        flow.eval()
        try:
            student_logits = flow.head(feature)
        finally:
            flow.train(was_training)
        for j in range(len(self.teacher_models())):
            teacher_logits = self.teacher_logits(dummy, None, j)
            if student_logits.shape != teacher_logits.shape:
                tap = self.teacher_tap_of(j, self.teacher_tap)
                raise ValueError(
                    f'the student predicts {tuple(student_logits.shape)} logits but the '
                    f'{self.teacher_label(j)}\'s tap {tap!r} gives {tuple(teacher_logits.shape)}; '
                    f'every teacher must classify the student\'s classes (check num_classes in '
                    f'both configs) and its tap must name its logits')

    def _infer_channels(self, dummy_input_shape) -> int:
        feature = self._dummy_feature(dummy_input_shape)
        if feature.dim() not in (2, 4):
            raise ValueError(f'student_tap {self.student_tap!r} gives a {tuple(feature.shape)} tensor; '
                             f'the flow needs (B, C) or (B, C, H, W)')
        return feature.shape[1]

    # -- representations -------------------------------------------------------
    def student_feature(self, inputs: Tensor) -> Tensor:
        """The student's feature map before pooling, ``(B, C, H, W)`` or ``(B, C)``."""
        outputs = run_until_tapped(self.student, [self.student_tap],
                                   lambda: self.student(inputs, mode='tensor'), 'student')
        return select(outputs[self.student_tap])

    def teacher_logits(self, inputs: Tensor, data_samples: Optional[list], index: int = 0) -> Tensor:
        """Teacher ``index``'s logits (its own tap, else ``teacher_tap``)."""
        tap = self.teacher_tap_of(index, self.teacher_tap)
        return select(self.teacher_outputs(inputs, data_samples, [tap], index)[tap])

    def teacher_runs(self, feature: Tensor, num_steps: int, labels: Optional[Tensor] = None,
                     teachers: Optional[Sequence[int]] = None) -> List[FlowOutput]:
        """One run of the flow per teacher in ``teachers`` (all by default;
        one run without a teacher): separate flows run in turn, the shared
        flow once on the stacked batch (:meth:`LevelFlows.runs`)."""
        teachers = range(max(len(self.teacher_models()), 1)) if teachers is None else teachers
        return self.flows.runs(0, feature, num_steps, teachers, labels)

    # -- training --------------------------------------------------------------
    def head_loss(self, logits: Tensor, data_samples: list) -> Tensor:
        """The student head's own loss (label smoothing, mixup targets, ...)."""
        return self.student.head._get_loss(logits, data_samples)['loss']

    def check_curriculum(self, fraction: float) -> None:
        if not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
            raise ValueError(f'the curriculum fraction must lie in (0, 1], got {fraction!r}')

    def curriculum_mask(self, target_logits: Tensor) -> Optional[Tensor]:
        """``(B,)`` booleans: the ``ceil(curriculum_fraction * B)`` samples on
        which ``target_logits`` are most confident (highest max softmax
        probability); None when the whole batch is kept."""
        if self.curriculum_fraction >= 1.0:
            return None
        confidence = target_logits.detach().float().softmax(1).amax(1)
        keep = max(1, math.ceil(self.curriculum_fraction * confidence.shape[0]))
        order = torch.argsort(confidence, descending=True, stable=True)
        mask = torch.zeros_like(confidence, dtype=torch.bool)
        mask[order[:keep]] = True
        return mask

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        labels = hard_labels(data_samples)
        feature = self.student_feature(inputs)
        targets = [self.teacher_logits(inputs, data_samples, j)
                   for j in range(len(self.teacher_models()))]  # none for OFM-KT
        weights = self.teacher_weights() or [1.0]  # OFM-KT: its one flow
        outs = self.teacher_runs(feature, self.flow_of(0).draw_num_steps(), labels)
        mask = None if self.curriculum_fraction >= 1.0 else \
            self.curriculum_mask(weighted(targets, weights) if targets else outs[0].ensemble)
        n = outs[0].steps.shape[0]
        logits = theta = None
        if self.deploy_mode == 'student':
            logits = self.student_logits_from_feature(feature)
        if logits is not None and len(outs) == 1 and self._theta_shares_flow_loss and mask is None \
                and not (self.flow_of(0).training and self.flow_of(0).objective.beta_d < 1.0):
            # the flow's steps and the plain head in one call of the shared metric loss
            flow_losses, theta = self.flow_of(0).step_losses(outs[0], targets[0] if targets else None,
                                                             labels, extra=(logits, None))
            per_teacher = [flow_losses]
        else:
            per_teacher = [self.flow_of(j).step_losses(out, target, labels, sample_mask=mask)
                           for j, (out, target) in enumerate(zip(outs, targets or [None]))]  # (N,) each
            flow_losses = weighted(per_teacher, weights)
            if logits is not None:
                theta = weighted([self.theta_loss(logits, out.ensemble.detach(), labels)
                                  for out in outs], weights)

        losses: Dict[str, Tensor] = {}
        # every step is also a classifier: its task loss, averaged over steps (and teachers)
        steps = outs[0].steps if len(outs) == 1 else torch.cat([out.steps for out in outs])
        step_task = self.steps_head_loss(steps, data_samples)
        losses['loss_flow_cls' if self.deploy_mode == 'student' else 'loss_cls'] = step_task
        losses['loss_flow'] = scaled(flow_losses.sum(), self.flow_loss_weight)
        losses['flow_step'] = scaled(flow_losses, n)  # per step, logged only (flow_step1, ...)
        if self.multi_teacher:  # each teacher's flow loss, logged only
            for j, values in enumerate(per_teacher):
                losses[f'flow_teacher{j}'] = values.detach().sum()
        if mask is not None:
            losses['curriculum_kept'] = mask.float().mean()  # logged only
        if self.roundtrip_loss_weight > 0:
            losses['loss_roundtrip'] = self.roundtrip_loss_weight * weighted(
                [self.flow_of(j).roundtrip_loss(feature, out) for j, out in enumerate(outs)], weights)
        if logits is not None:
            losses['loss_cls'] = self.head_loss(logits, data_samples)
            losses['loss_theta'] = scaled(theta, self.theta_loss_weight)
        return losses

    def steps_head_loss(self, steps: Tensor, data_samples: list) -> Tensor:
        """The head's task loss averaged over the steps ``(N, B, K)``, in one
        call on the ``N * B`` rows (every step sees the batch's labels)."""
        n = steps.shape[0]
        return self.head_loss(steps.flatten(0, 1), list(data_samples) * n)

    def task_losses(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        """Distillation switched off. ``fmkt``: the flow with the student's
        head is the classifier that predicts, so ``loss_cls`` stays the task
        loss of every flow step (averaged over steps) and trains student and
        flow; only the teacher term is dropped. Deploy mode 'student': the plain
        student's ``loss_cls``."""
        feature = self.student_feature(inputs)
        if self.deploy_mode == 'flow':
            outs = self.teacher_runs(feature, self.flow_of(0).draw_num_steps(),
                                     hard_labels(data_samples))
            steps = torch.cat([out.steps for out in outs])
            return dict(loss_cls=self.steps_head_loss(steps, data_samples))
        return dict(loss_cls=self.head_loss(self.student_logits_from_feature(feature), data_samples))

    @torch.no_grad()
    def roundtrip_errors(self, inputs: Tensor, data_samples: Optional[list] = None, num_steps: Optional[int] = None,
                         refine: int = 0) -> Dict[str, RoundTrip]:
        """Invertibility of the flow on a batch: ``'s2t2s'`` (student feature
        -> teacher space -> back) and ``'t2s2t'`` (the flow's teacher-space
        image -> student space -> forward again). The teacher gives logits,
        which are not in the flow's space, so the teacher-space points are
        the flow's own images. ``num_steps`` defaults to ``eval_steps``.
        With several teachers: each teacher's flow as ``'s2t2s_t{j}'`` and
        ``'t2s2t_t{j}'``, and their sums under the plain keys."""
        feature = self.student_feature(inputs)
        steps = num_steps or self.eval_steps
        if not self.multi_teacher:
            return self.flows.roundtrip(0, 0, feature, steps, refine=refine)
        errors: Dict[str, RoundTrip] = {}
        for j in range(len(self.teacher_models())):
            for key, value in self.flows.roundtrip(j, 0, feature, steps, refine=refine).items():
                errors[f'{key}_t{j}'] = value
                errors[key] = errors[key] + value if key in errors else value
        return errors

    def student_logits_from_feature(self, feature: Tensor) -> Tensor:
        """The plain student's logits from its feature (its own tail)."""
        return ClassifierTail.of(self.student)(feature)

    # -- inference -------------------------------------------------------------
    def flow_logits(self, feature: Tensor, steps: int) -> Tensor:
        """The deployed flows' implicit ensemble (logits) at ``steps`` steps."""
        return self.flow_ensembles(feature, [steps])[steps]

    def predict(self, inputs: Tensor, data_samples: Optional[list] = None) -> list:
        feature = self.student_feature(inputs)
        counts = ([self.eval_steps] if self.deploy_mode == 'flow' else []) + list(self.extra_eval_steps)
        ensembles = self.flow_ensembles(feature, list(dict.fromkeys(counts)))
        if self.deploy_mode == 'flow':
            logits = ensembles[self.eval_steps]
        else:
            logits = self.student_logits_from_feature(feature)
        samples = self.student.head._get_predictions(logits, data_samples)
        for steps in self.extra_eval_steps:
            for sample, label in zip(samples, ensembles[steps].argmax(1).tolist()):
                sample.set_metainfo({f'flow_pred_label_steps{steps}': int(label)})
        return samples

    def flow_ensembles(self, feature: Tensor, counts: Sequence[int]) -> Dict[int, Tensor]:
        """The flow's implicit ensemble (logits) at each step count in
        ``counts``: one run per count, one head call for all of them."""
        if not counts:
            return {}
        teachers, weights = self.deployed_teachers()
        estimates = [out.estimates for n in counts for out in self.teacher_runs(feature, n, teachers=teachers)]
        logits = self.flow_of(0).apply_head(torch.cat(estimates))  # (sum N, B, K): the flows share the tail
        parts = iter(logits.split([e.shape[0] for e in estimates]))
        return {n: weighted([next(parts).mean(0) for _ in teachers], weights) for n in counts}

    def _forward(self, inputs: Tensor, data_samples=None):
        feature = self.student_feature(inputs)
        if self.deploy_mode == 'flow':
            return self.flow_logits(feature, self.eval_steps)
        return self.student_logits_from_feature(feature)
