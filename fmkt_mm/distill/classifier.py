"""FM-KT for mmpretrain classifiers (logit-based, the paper's default).

The flow transports the student's last feature map before pooling (the
output of ``student_tap``, by default ``backbone``) and every step's estimate
goes through a classifier tail (neck + head) to logits, compared with the
teacher's logits (the output of ``teacher_tap``, by default ``head``).

Variants:

* ``fmkt``: the tail is the student's own neck and head; prediction is the
  implicit ensemble of the flow's steps (``eval_steps`` of them).
* ``fmkt_theta`` (FM-KT^Theta, zero inference cost): the flow gets its own
  copy of the tail; the student's head is trained on the raw feature with
  ``theta_loss(student logits, stopgrad(ensemble))`` plus its task loss, and
  inference runs the plain student.
* ``ofmkt`` (OFM-KT, no teacher): as ``fmkt_theta``, but each step's target
  is the flow's own detached ensemble.

FlowDistill options (all variants):

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
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ..flow import FlowTransfer, RoundTrip, build_condition
from ..registry import MODELS
from ..utils import build_from_registry
from .base import BaseDistiller, hard_labels
from .taps import run_until_tapped, select

VARIANTS = ('fmkt', 'fmkt_theta', 'ofmkt')


class ClassifierTail(nn.Module):
    """neck (optional) + head of an mmpretrain classifier: feature -> logits."""

    def __init__(self, neck: Optional[nn.Module], head: nn.Module):
        super().__init__()
        self.neck, self.head = neck, head

    def forward(self, feature: Tensor) -> Tensor:
        feats = (feature,)
        if self.neck is not None:
            feats = self.neck(feats)
        return self.head(feats)


@MODELS.register_module()
class ClassificationDistiller(BaseDistiller):
    """Distils an mmpretrain ``ImageClassifier`` with FM-KT.

    Args:
        student, teacher, data_preprocessor: see :class:`BaseDistiller`.
        variant: ``'fmkt'``, ``'fmkt_theta'`` or ``'ofmkt'``.
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

    ``flow`` may hold ``condition`` (see the module docstring).
    """

    def __init__(self,
                 student: dict,
                 teacher: Optional[dict] = None,
                 variant: str = 'fmkt',
                 flow: Optional[dict] = None,
                 flow_loss_weight: float = 1.0,
                 theta_loss: Optional[dict] = None,
                 theta_loss_weight: float = 1.0,
                 student_tap: str = 'backbone',
                 teacher_tap: str = 'head',
                 eval_steps: Optional[int] = None,
                 dummy_input_shape: Sequence[int] = (3, 64, 64),
                 roundtrip_loss_weight: float = 0.0,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if variant not in VARIANTS:
            raise ValueError(f'unknown variant {variant!r}; choose one of {list(VARIANTS)}')
        if variant == 'ofmkt' and teacher is not None:
            raise ValueError("variant='ofmkt' is the online variant and uses no teacher; "
                             "remove the teacher or choose variant='fmkt' / 'fmkt_theta'")
        if variant != 'ofmkt' and teacher is None:
            raise ValueError(f"variant={variant!r} needs a teacher: teacher=dict(config=..., "
                             f"checkpoint=...); for distillation without a teacher use variant='ofmkt'")
        super().__init__(student, teacher, data_preprocessor, init_cfg)
        for part in ('backbone', 'head'):
            if getattr(self.student, part, None) is None:
                raise ValueError(f'the student must be an mmpretrain classifier with a {part} '
                                 f'(got {type(self.student).__name__})')
        self.variant, self.student_tap, self.teacher_tap = variant, student_tap, teacher_tap
        self.check_taps([student_tap], [teacher_tap])
        self.flow_loss_weight, self.theta_loss_weight = flow_loss_weight, theta_loss_weight

        student_tail = ClassifierTail(getattr(self.student, 'neck', None), self.student.head)
        # fmkt: the student's own classifier reads the flow; otherwise the
        # student's head stays the deployable plain head and the flow gets a copy
        flow_tail = student_tail if variant == 'fmkt' else copy.deepcopy(student_tail)
        flow = dict(flow or {})
        flow.setdefault('loss', dict(type='KDLoss'))
        if flow.get('channels') is None:
            flow['channels'] = self._infer_channels(dummy_input_shape)
        if flow.get('condition') is not None:
            flow['condition'] = build_condition(
                flow['condition'], flow['channels'], num_levels=1,
                num_classes=getattr(self.student.head, 'num_classes', None))
        self.flow = FlowTransfer(head=flow_tail, **flow)
        self.theta_loss = None
        if variant != 'fmkt':
            self.theta_loss = build_from_registry(MODELS, theta_loss or flow['loss'], 'loss')
        #: the theta loss is the flow's metric loss: both run in one call
        self._theta_shares_flow_loss = variant != 'fmkt' and (
            theta_loss is None or (isinstance(theta_loss, dict) and theta_loss == flow['loss']))
        self._check_shapes(dummy_input_shape)
        self.eval_steps = eval_steps or self.flow.num_steps
        #: extra step counts evaluated in the same pass (set_eval_steps)
        self.extra_eval_steps: List[int] = []
        if roundtrip_loss_weight < 0:
            raise ValueError(f'roundtrip_loss_weight must be >= 0, got {roundtrip_loss_weight}')
        self.roundtrip_loss_weight = roundtrip_loss_weight
        #: fraction of each batch (easiest first, by teacher confidence) that
        #: receives the distillation loss (set_curriculum)
        self.curriculum_fraction = 1.0

    @property
    def deploy_mode(self) -> str:
        """``'flow'`` if prediction needs the flow, ``'student'`` if the plain
        student alone predicts (FM-KT^Theta, OFM-KT)."""
        return self.deploy_mode_of(dict(variant=self.variant))

    @classmethod
    def deploy_mode_of(cls, cfg: dict) -> str:
        return 'flow' if cfg.get('variant', 'fmkt') == 'fmkt' else 'student'

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
        was_training = self.flow.training
        self.flow.eval()
        try:
            student_logits = self.flow.head(feature)
        finally:
            self.flow.train(was_training)
        teacher_logits = self.teacher_logits(dummy, None)
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f'the student predicts {tuple(student_logits.shape)} logits but the teacher tap '
                f'{self.teacher_tap!r} gives {tuple(teacher_logits.shape)}; both models must '
                f'classify the same classes (check num_classes in both configs) and teacher_tap '
                f'must name the teacher\'s logits')

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

    def teacher_logits(self, inputs, data_samples) -> Tensor:
        out = self.teacher_outputs(inputs, data_samples, [self.teacher_tap])
        return select(out[self.teacher_tap])

    # -- training --------------------------------------------------------------
    def task_loss(self, logits: Tensor, data_samples) -> Tensor:
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

    def loss(self, inputs: Tensor, data_samples) -> Dict[str, Tensor]:
        labels = hard_labels(data_samples)
        feature = self.student_feature(inputs)
        target = None
        if self.teacher is not None:
            target = self.teacher_logits(inputs, data_samples)
        out = self.flow.run(feature, self.flow.draw_num_steps(), labels=labels)
        mask = self.curriculum_mask(target if target is not None else out.ensemble)
        n = out.steps.shape[0]
        logits = theta = None
        if self.deploy_mode == 'student':
            logits = self.student_logits_from_feature(feature)
        if logits is not None and self._theta_shares_flow_loss and mask is None and \
                not (self.flow.training and self.flow.beta_d < 1.0):
            flow_losses, theta = self._flow_and_theta_losses(out, target, logits, labels)
        else:
            flow_losses = self.flow.step_loss_vector(out, target, labels, sample_mask=mask)  # (N,)
            if logits is not None:
                theta = self.theta_loss(logits, out.ensemble.detach(), labels)

        losses: Dict[str, Tensor] = {}
        # every step is also a classifier: its task loss, averaged over steps
        step_task = self.steps_task_loss(out.steps, data_samples)
        losses['loss_flow_cls' if self.deploy_mode == 'student' else 'loss_cls'] = step_task
        losses['loss_flow'] = self.flow_loss_weight * flow_losses.sum()
        losses['flow_step'] = flow_losses.detach() * n  # per step, logged only (flow_step1, ...)
        if mask is not None:
            losses['curriculum_kept'] = mask.float().mean()  # logged only
        if self.roundtrip_loss_weight > 0:
            losses['loss_roundtrip'] = self.roundtrip_loss_weight * self.flow.roundtrip_loss(feature, out)
        if logits is not None:
            losses['loss_cls'] = self.task_loss(logits, data_samples)
            losses['loss_theta'] = self.theta_loss_weight * theta
        return losses

    def _flow_and_theta_losses(self, out, target: Optional[Tensor], logits: Tensor, labels):
        """The flow's per-step losses ``(N,)`` (divided by N) and the theta
        loss of the plain head against the detached ensemble, in one call
        of the shared metric loss on ``N + 1`` stacked outputs."""
        n = out.steps.shape[0]
        ensemble = out.ensemble.detach()
        outputs = torch.cat([out.steps, logits[None]])
        if target is None:  # OFM-KT: the ensemble is every row's target
            targets = ensemble
        else:
            self.flow.check_target(target, out)
            targets = torch.cat([target.detach().expand_as(out.steps), ensemble[None]])
        values = self.flow.loss_fn.forward_steps(outputs, targets, labels)
        return values[:n] / n, values[n]

    def steps_task_loss(self, steps: Tensor, data_samples) -> Tensor:
        """The head's task loss averaged over the steps ``(N, B, K)``, in one
        call on the ``N * B`` rows (every step sees the batch's labels)."""
        n = steps.shape[0]
        return self.task_loss(steps.flatten(0, 1), list(data_samples) * n)

    def task_losses(self, inputs: Tensor, data_samples) -> Dict[str, Tensor]:
        """Distillation switched off. ``fmkt``: the flow with the student's
        head is the classifier that predicts, so ``loss_cls`` stays the task
        loss of every flow step (averaged over steps) and trains student and
        flow; only the teacher term is dropped. Other variants: the plain
        student's ``loss_cls``."""
        feature = self.student_feature(inputs)
        if self.deploy_mode == 'flow':
            out = self.flow.run(feature, self.flow.draw_num_steps(), labels=hard_labels(data_samples))
            return dict(loss_cls=self.steps_task_loss(out.steps, data_samples))
        return dict(loss_cls=self.task_loss(self.student_logits_from_feature(feature), data_samples))

    @torch.no_grad()
    def roundtrip_errors(self, inputs: Tensor, data_samples=None, num_steps: Optional[int] = None,
                         refine: int = 0) -> Dict[str, RoundTrip]:
        """Invertibility of the flow on a batch: ``'s2t2s'`` (student feature
        -> teacher space -> back) and ``'t2s2t'`` (the flow's teacher-space
        image -> student space -> forward again). The teacher gives logits,
        which are not in the flow's space, so the teacher-space points are
        the flow's own images. ``num_steps`` defaults to ``eval_steps``."""
        feature = self.student_feature(inputs)
        return self.flow.roundtrip(feature, num_steps or self.eval_steps, refine=refine)

    def student_logits_from_feature(self, feature: Tensor) -> Tensor:
        feats = (feature,)
        if getattr(self.student, 'neck', None) is not None:
            feats = self.student.neck(feats)
        return self.student.head(feats)

    # -- inference -------------------------------------------------------------
    def flow_logits(self, feature: Tensor, steps: int) -> Tensor:
        return self.flow.sample(feature, num_steps=steps)

    def predict(self, inputs: Tensor, data_samples=None):
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
        estimates = [self.flow.transport(feature, n)[0] for n in counts]
        logits = self.flow.apply_head(torch.cat(estimates))  # (sum N, B, K)
        return {n: part.mean(0) for n, part in zip(counts, logits.split([e.shape[0] for e in estimates]))}

    def _forward(self, inputs: Tensor, data_samples=None):
        feature = self.student_feature(inputs)
        if self.deploy_mode == 'flow':
            return self.flow_logits(feature, self.eval_steps)
        return self.student_logits_from_feature(feature)
