"""The classic teacher-student baselines FM-KT is measured against.

* :class:`LogitDistiller`: the student's logits are matched to the teacher's
  by any metric loss (KD, DKD, DIST, ...) on top of the student's task loss.
  One teacher forward and one student forward/backward per iteration: the
  floor of every logit-based teacher-student method.
* :class:`FeatureDistiller`: a detector's neck levels are matched to the
  teacher's (PKD by default), through an optional adapter where the shapes
  differ. A learnable loss whose modules depend on the level's widths (MGD)
  is built once per level. The head reads the raw levels, so the deployed
  model is the plain student.

Both deploy the unchanged student (``deploy_mode == 'student'``).
"""
import inspect
from typing import Any, Dict, List, Optional, Sequence, Union

from torch import Tensor, nn

from ..registry import MODELS
from ..utils import build_from_registry, scoped_get
from .base import BaseDistiller, hard_labels
from .levels import AUTO_ADAPTER, LevelDistiller, Shape, TeacherShape, as_levels
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
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        if teacher is None:
            raise ValueError('LogitDistiller needs a teacher: teacher=dict(config=..., checkpoint=...)')
        super().__init__(student, teacher, data_preprocessor, init_cfg)
        self.student_tap, self.teacher_tap = student_tap, teacher_tap
        self.check_taps([student_tap], [teacher_tap])
        self.kd_loss = build_from_registry(MODELS, loss or dict(type='KDLoss'), 'loss')

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
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
    ``adapter`` (``'auto'`` by default), ``teacher_norm`` and
    ``dummy_input_shape`` mean what they mean for
    :class:`DetectionDistiller`; ``loss`` is the metric loss (``PKDLoss`` by
    default, as in MMRazor's PKD recipes), one module shared by the levels
    (``feat_loss``).

    A loss config whose class takes ``student_channels`` and
    ``teacher_channels`` (``MGDLoss``) is built once per level instead, in
    ``level_losses`` (``feat_loss`` is then None), with both filled from the
    level's widths where the config leaves them out (the student's is the
    adapter's output width where there is an adapter). Such a loss maps the
    student's channels to the teacher's itself, so without an adapter only
    the spatial sizes of a level pair must agree. Its modules are the
    distiller's submodules: the optimizer trains them and checkpoints hold
    them; the deployed student does not contain them.
    """

    deploy_mode = 'student'

    def __init__(self, student: dict, teacher: dict, loss: Optional[dict] = None,
                 levels: Sequence[Union[int, Sequence[int]]] = (0, 1, 2, 3),
                 level_weights: Union[float, Sequence[float]] = 1.0,
                 student_tap: str = 'neck', teacher_tap: str = 'neck',
                 adapter: Optional[Union[str, dict]] = AUTO_ADAPTER, teacher_norm: bool = False,
                 dummy_input_shape: Sequence[int] = (3, 128, 128),
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        if teacher is None:
            raise ValueError('FeatureDistiller needs a teacher: teacher=dict(config=..., checkpoint=...)')
        super().__init__(student, teacher, data_preprocessor, init_cfg)
        student_shapes, teacher_shapes = self.setup_levels(levels, level_weights, student_tap,
                                                           teacher_tap, dummy_input_shape, teacher_norm)
        loss = loss or dict(type='PKDLoss')
        per_level = takes_level_channels(loss)
        adapters = [self._pair_adapter(adapter, s, t, student_shapes[s], teacher_shapes[0][t], per_level)
                    for s, t in self.level_pairs]
        self.adapters = nn.ModuleList(adapters)
        self.feat_loss = None if per_level else build_from_registry(MODELS, loss, 'loss')
        self.level_losses: Optional[nn.ModuleList] = None
        if per_level:  # the loss sees the adapter's output: the teacher's width
            self.level_losses = nn.ModuleList([
                self._level_loss(loss, s, t, (teacher_shapes[0][t] if isinstance(a, TeacherShape)
                                              else student_shapes[s])[1], teacher_shapes[0][t][1])
                for (s, t), a in zip(self.level_pairs, adapters)])

    def _pair_adapter(self, adapter: Optional[Union[str, dict]], s: int, t: int, s_shape: Shape, t_shape: Shape,
                      per_level: bool) -> nn.Module:
        """The pair's adapter (an identity where none is needed). A per-level
        loss aligns the channels itself: without an adapter, only the
        spatial sizes must agree."""
        if per_level and adapter == AUTO_ADAPTER and s_shape[2:] == t_shape[2:]:
            return nn.Identity()  # the loss maps the channels
        if adapter is None and per_level:
            if s_shape[2:] != t_shape[2:]:
                raise ValueError(
                    f'student level {s} has shape {s_shape} but teacher level {t} has shape {t_shape} '
                    f'(B, C, H, W at a {self._dummy_input_shape} input): the loss maps the channels '
                    f"but not the spatial size. Configure an adapter to the teacher's shape, e.g. "
                    f"adapter=dict(type='FeatureAdapter') (1x1 conv {s_shape[1]} -> {t_shape[1]} "
                    f'channels, bilinear resize), or pair other levels.')
            return nn.Identity()
        return self.level_adapter(adapter, s, t, s_shape, t_shape) or nn.Identity()

    @staticmethod
    def _level_loss(loss: Union[str, dict], s: int, t: int, student_channels: int, teacher_channels: int) -> nn.Module:
        """Level pair ``(s, t)``'s own loss, its widths filled in."""
        built = build_from_registry(MODELS, loss, 'loss', student_channels=student_channels,
                                    teacher_channels=teacher_channels)
        found = (getattr(built, 'student_channels', student_channels),
                 getattr(built, 'teacher_channels', teacher_channels))
        if found != (student_channels, teacher_channels):
            raise ValueError(
                f'the loss of student level {s} / teacher level {t} is configured with '
                f'student_channels={found[0]}, teacher_channels={found[1]}, but the level pair has '
                f'{student_channels} -> {teacher_channels} channels; leave both out of the loss config '
                f'(FeatureDistiller fills them per level)')
        return built

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        teacher_levels = self.teacher_levels(inputs, data_samples)
        with record_outputs(self.student, [self.student_tap], 'student') as seen:
            losses = dict(self.student.loss(inputs, data_samples))
        student_levels: List[Tensor] = as_levels(seen[self.student_tap], self.student_tap,
                                                       'student')
        level_losses = self.level_losses if self.level_losses is not None else \
            [self.feat_loss] * len(self.level_pairs)
        for (s, t), adapter, loss_fn, weight in zip(self.level_pairs, self.adapters, level_losses,
                                                    self.level_weights):
            target = teacher_levels[t]
            level = student_levels[s]
            if isinstance(adapter, TeacherShape):
                level = adapter(level, tuple(target.shape[-2:]))
            losses[f'loss_feat_l{s}'] = weight * loss_fn(level, target)
        return losses


def takes_level_channels(loss: Any) -> bool:
    """Whether the ``loss`` config (a name or a dict with ``type``) names a
    class whose constructor takes ``student_channels`` and
    ``teacher_channels``: a loss with modules of the level's widths, built
    once per level. A built module is shared as it is."""
    if isinstance(loss, str):
        loss = dict(type=loss)
    if not isinstance(loss, dict):
        return False
    cls = loss.get('type')
    if isinstance(cls, str):
        cls = scoped_get(MODELS, cls)
    if not isinstance(cls, type):
        return False  # unknown names fail when built, with the list of known ones
    params = inspect.signature(cls).parameters
    return 'student_channels' in params and 'teacher_channels' in params
