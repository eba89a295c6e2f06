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
"""
import copy
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..flow import FlowTransfer
from ..registry import MODELS
from ..utils import build_from_registry
from .base import BaseDistiller, hard_labels
from .taps import record_outputs, run_until_tapped, select

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
        self.flow = FlowTransfer(head=flow_tail, **flow)
        self.theta_loss = None
        if variant != 'fmkt':
            self.theta_loss = build_from_registry(MODELS, theta_loss or flow['loss'], 'loss')
        self._check_shapes(dummy_input_shape)
        self.eval_steps = eval_steps or self.flow.num_steps
        #: extra step counts evaluated in the same pass (set by FlowStepsHook)
        self.extra_eval_steps: List[int] = []

    @property
    def deploy_mode(self) -> str:
        """``'flow'`` if prediction needs the flow, ``'student'`` if the plain
        student alone predicts (FM-KT^Theta, OFM-KT)."""
        return 'flow' if self.variant == 'fmkt' else 'student'

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

    def loss(self, inputs: Tensor, data_samples) -> Dict[str, Tensor]:
        labels = hard_labels(data_samples)
        feature = self.student_feature(inputs)
        target = None
        if self.teacher is not None:
            target = self.teacher_logits(inputs, data_samples)
        flow_losses, out = self.flow.loss(feature, target, labels)
        n = len(out.steps)

        losses: Dict[str, Tensor] = {}
        # every step is also a classifier: its task loss, averaged over steps
        step_task = sum(self.task_loss(step, data_samples) for step in out.steps) / n
        losses['loss_flow_cls' if self.deploy_mode == 'student' else 'loss_cls'] = step_task
        losses['loss_flow'] = self.flow_loss_weight * sum(flow_losses.values())
        for key, value in flow_losses.items():  # per-step values, logged only
            losses[key.replace('loss_flow_', 'flow_')] = value.detach() * n
        if self.deploy_mode == 'student':
            logits = self.student_logits_from_feature(feature)
            losses['loss_cls'] = self.task_loss(logits, data_samples)
            losses['loss_theta'] = self.theta_loss_weight * self.theta_loss(
                logits, out.ensemble.detach(), labels)
        return losses

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
        if self.deploy_mode == 'flow':
            logits = self.flow_logits(feature, self.eval_steps)
        else:
            logits = self.student_logits_from_feature(feature)
        samples = self.student.head._get_predictions(logits, data_samples)
        for steps in self.extra_eval_steps:
            labels = self.flow_logits(feature, steps).argmax(1)
            for sample, label in zip(samples, labels):
                sample.set_metainfo({f'flow_pred_label_steps{steps}': int(label)})
        return samples

    def _forward(self, inputs: Tensor, data_samples=None):
        feature = self.student_feature(inputs)
        if self.deploy_mode == 'flow':
            return self.flow_logits(feature, self.eval_steps)
        return self.student_logits_from_feature(feature)

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self._forward(inputs, data_samples)
        raise RuntimeError(f'invalid mode {mode!r}; use loss, predict or tensor')
