"""The classic teacher-student baselines FM-KT is measured against.

* :class:`LogitDistiller`: the student's logits are matched to the teacher's
  by any metric loss (KD, DKD, DIST, ...) on top of the student's task loss.
  One teacher forward and one student forward/backward per iteration: the
  floor of every logit-based teacher-student method.
* :class:`FeatureDistiller`: a detector's neck levels are matched to the
  teacher's (PKD by default), through an optional adapter where the shapes
  differ. The head reads the raw levels, so the deployed model is the plain
  student.

Both deploy the unchanged student (``deploy_mode == 'student'``).
"""
from typing import Dict, List, Optional, Sequence, Union

from torch import Tensor, nn

from ..registry import MODELS
from ..utils import build_from_registry
from .base import BaseDistiller, hard_labels
from .levels import LevelDistiller, TeacherShape, as_levels
from .taps import record_outputs, select


@MODELS.register_module()
class LogitDistiller(BaseDistiller):
    """Logit distillation of an mmpretrain classifier: ``loss_cls`` (the
    head's own loss) plus ``loss_kd = loss(student logits, teacher logits)``.

    Args:
        student, teacher, data_preprocessor: see :class:`BaseDistiller`.
        loss: a metric loss config, e.g. ``dict(type='fmkt_mm.KDLoss',
            tau=4.0)``, ``DKDLoss`` or ``DISTLoss``.
        student_tap / teacher_tap: module paths of the logits (``head``).
    """

    deploy_mode = 'student'

    def __init__(self, student: dict, teacher: dict, loss: Optional[dict] = None,
                 student_tap: str = 'head', teacher_tap: str = 'head',
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None):
        if teacher is None:
            raise ValueError('LogitDistiller needs a teacher: teacher=dict(config=..., checkpoint=...)')
        super().__init__(student, teacher, data_preprocessor, init_cfg)
        self.student_tap, self.teacher_tap = student_tap, teacher_tap
        self.check_taps([student_tap], [teacher_tap])
        self.kd_loss = build_from_registry(MODELS, loss or dict(type='KDLoss'), 'loss')

    def loss(self, inputs: Tensor, data_samples) -> Dict[str, Tensor]:
        teacher = select(self.teacher_outputs(inputs, data_samples, [self.teacher_tap])[self.teacher_tap])
        with record_outputs(self.student, [self.student_tap], 'student') as seen:
            losses = dict(self.student.loss(inputs, data_samples))
        student = select(seen[self.student_tap])
        if student.shape != teacher.shape:
            raise ValueError(f'student logits {tuple(student.shape)} and teacher logits '
                             f'{tuple(teacher.shape)} differ: both taps must name logits of the '
                             f'same classes')
        losses['loss_kd'] = self.kd_loss(student, teacher, hard_labels(data_samples))
        return losses


@MODELS.register_module()
class FeatureDistiller(LevelDistiller):
    """Feature distillation of an mmdet detector's neck levels without a flow:
    ``loss_feat_l{l} = w_l * loss(adapter(student level), teacher level)``.

    ``levels``, ``level_weights``, ``student_tap``, ``teacher_tap``,
    ``adapter`` and ``dummy_input_shape`` mean what they mean for
    :class:`DetectionDistiller`; ``loss`` is the metric loss (``PKDLoss`` by
    default, as in MMRazor's PKD recipes).
    """

    deploy_mode = 'student'

    def __init__(self, student: dict, teacher: dict, loss: Optional[dict] = None,
                 levels: Sequence[Union[int, Sequence[int]]] = (0, 1, 2, 3),
                 level_weights: Union[float, Sequence[float]] = 1.0,
                 student_tap: str = 'neck', teacher_tap: str = 'neck',
                 adapter: Optional[Union[str, dict]] = None,
                 dummy_input_shape: Sequence[int] = (3, 128, 128),
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None):
        if teacher is None:
            raise ValueError('FeatureDistiller needs a teacher: teacher=dict(config=..., checkpoint=...)')
        super().__init__(student, teacher, data_preprocessor, init_cfg)
        student_shapes, teacher_shapes = self.setup_levels(levels, level_weights, student_tap,
                                                           teacher_tap, dummy_input_shape)
        adapters = [self.level_adapter(adapter, s, t, student_shapes[s], teacher_shapes[0][t]) or nn.Identity()
                    for s, t in self.level_pairs]
        self.adapters = nn.ModuleList(adapters)
        self.feat_loss = build_from_registry(MODELS, loss or dict(type='PKDLoss'), 'loss')

    def loss(self, inputs: Tensor, data_samples) -> Dict[str, Tensor]:
        teacher_levels = self.teacher_levels(inputs, data_samples)
        with record_outputs(self.student, [self.student_tap], 'student') as seen:
            losses = dict(self.student.loss(inputs, data_samples))
        student_levels: List[Tensor] = as_levels(seen[self.student_tap], self.student_tap,
                                                       'student')
        for (s, t), adapter, weight in zip(self.level_pairs, self.adapters, self.level_weights):
            target = teacher_levels[t]
            if isinstance(adapter, TeacherShape):
                adapter.size = tuple(target.shape[-2:])
            losses[f'loss_feat_l{s}'] = weight * self.feat_loss(adapter(student_levels[s]), target)
        return losses
