"""Distilling a detector's neck levels: the bookkeeping every level distiller shares.

A *level distiller* pairs student levels with teacher levels of the tapped
outputs (an FPN neck by default), weighs each pair, infers both sides'
shapes on a zero batch, and maps a student level to the teacher's shape with
an adapter where the two differ. :class:`LevelDistiller` does this once for
the FM-KT detection distiller and the PKD-style feature distiller.
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from ..registry import MODELS
from ..utils import build_from_registry
from .base import BaseDistiller
from .taps import run_until_tapped

LevelSpec = Union[int, Tuple[int, int]]
Shape = Tuple[int, ...]
#: the ``adapter`` value (the default) that builds a FeatureAdapter for each
#: level pair whose shapes differ, and none where they agree
AUTO_ADAPTER = 'auto'


def standardise(x: Tensor, eps: float = 1e-5) -> Tensor:
    """``x`` standardised per channel over the batch and positions: a
    BatchNorm in training mode without affine parameters or running
    statistics (a single value per channel becomes 0)."""
    var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)


class TeacherShape(nn.Module):
    """Student level -> the teacher's shape, through an adapter such as
    :class:`~fmkt_mm.distill.FeatureAdapter` (``(B, C_s, H_s, W_s) -> (B,
    C_t, H_t, W_t)``). The teacher's spatial size changes with every padded
    batch, so the caller passes the size it needs with each call."""

    def __init__(self, adapter: nn.Module) -> None:
        super().__init__()
        self.adapter = adapter

    def forward(self, x: Tensor, size: Optional[Tuple[int, int]] = None) -> Tensor:
        return self.adapter(x, size)


def parse_levels(levels: Sequence[LevelSpec]) -> List[Tuple[int, int]]:
    """``(student_level, teacher_level)`` pairs from ints (the same level on
    both sides) and pairs; each student level at most once."""
    pairs = []
    for level in levels:
        if isinstance(level, int):
            pairs.append((level, level))
        elif (isinstance(level, (tuple, list)) and len(level) == 2
              and all(isinstance(v, int) for v in level)):
            pairs.append((int(level[0]), int(level[1])))
        else:
            raise ValueError(f'levels must hold ints (same level on both sides) or '
                             f'(student_level, teacher_level) pairs, got {level!r}')
    if not pairs:
        raise ValueError('levels is empty: name at least one level to distil, e.g. levels=(0, 1, 2, 3)')
    students = [s for s, _ in pairs]
    if len(set(students)) != len(students):
        raise ValueError(f'a student level appears twice in levels={list(levels)}; each student '
                         f'level is distilled once')
    return pairs


def parse_weights(weights: Union[float, Sequence[float]], n: int, option: str = 'level_weights') -> List[float]:
    """One weight per level from a float (shared) or a list of ``n`` (``option`` names it)."""
    if isinstance(weights, (int, float)):
        return [float(weights)] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f'{option} has {len(weights)} values for {n} distilled levels; '
                         f'give one per level or a single float')
    return weights


def check_scales(scales: Sequence[float], num_levels: int) -> None:
    """One multiplier >= 0 per distilled level, or a ValueError saying so."""
    if not isinstance(scales, (list, tuple)) or len(scales) != num_levels or \
            any(not isinstance(s, (int, float)) or s < 0 for s in scales):
        raise ValueError(f'level scales {list(scales) if isinstance(scales, (list, tuple)) else scales!r}'
                         f' have {len(scales) if isinstance(scales, (list, tuple)) else "no"} '
                         f'entries for {num_levels} distilled levels; give one multiplier >= 0 per level')


def as_levels(output: Union[Tensor, Sequence[Tensor]], tap: str, who: str) -> List[Tensor]:
    """A tapped output as a list of ``(B, C, H, W)`` levels."""
    levels = [output] if isinstance(output, Tensor) else list(output)
    if not levels or not all(isinstance(x, Tensor) and x.dim() == 4 for x in levels):
        raise ValueError(f'the {who}\'s tap {tap!r} must output a (B, C, H, W) tensor or a '
                         f'tuple of them (an FPN neck); got {type(output).__name__}')
    return levels


#: a separate flow's adapter as distillers saved it while each flow held its
#: own (``flows.{i}.head.*``; the EMA's copy ``ema_flows.{i}.head.*``)
_FLOW_HELD_ADAPTER = re.compile(r'(ema_)?flows\.(\d+)\.head\.')


def upgrade_adapter_keys(state: Dict[str, object], prefix: str = '') -> int:
    """Rename, in ``state`` and in place, the keys of a level distiller saved
    while each separate flow held its teacher's adapter: ``flows.{i}.head.*``
    becomes ``teacher_adapters.{i}.*`` (the same teacher-major index); the
    EMA's copies, ``ema_flows.{i}.head.*``, which inference never ran, are
    dropped. Only keys under ``prefix`` are read. Returns the number of keys
    renamed or dropped: each changes its place in the parameter order."""
    changed = 0
    for key in [k for k in state if k.startswith(prefix)]:
        match = _FLOW_HELD_ADAPTER.match(key, len(prefix))
        if match is None:
            continue
        value = state.pop(key)
        if not match.group(1):
            state[f'{prefix}teacher_adapters.{match.group(2)}.{key[match.end():]}'] = value
        changed += 1
    return changed


class LevelDistiller(BaseDistiller):
    """Base of the distillers of neck levels (see the module docstring).

    :meth:`setup_levels` sets ``student_tap``, ``teacher_tap``,
    ``level_pairs`` and ``level_weights`` and returns both sides' level
    shapes; :meth:`level_adapter` builds the adapter of one pair. A
    distiller that keeps them per teacher in ``teacher_adapters``
    (teacher-major, an identity where the shapes agree) applies them with
    :meth:`to_teacher_space`.
    """

    def setup_levels(self, levels: Sequence[LevelSpec], level_weights: Union[float, Sequence[float]],
                     student_tap: str, teacher_tap: str, dummy_input_shape: Sequence[int],
                     teacher_norm: bool = False) -> Tuple[List[Shape], List[List[Shape]]]:
        """Returns ``(student_shapes, teacher_shapes)``: ``(1, C, H, W)`` per
        level of the student's tap, and per teacher (one list per teacher,
        in order) per level of its tap, at a ``dummy_input_shape`` input.
        ``teacher_norm``: the teacher's levels are standardised per channel
        over the batch and positions (a BatchNorm without affine parameters
        or running statistics, MMRazor's ``NormConnector`` of the published
        RTMDet recipe) before they are compared."""
        if not isinstance(teacher_norm, bool):
            raise ValueError(f'teacher_norm must be True or False, got {teacher_norm!r}')
        self.teacher_norm = teacher_norm
        self.student_tap, self.teacher_tap = student_tap, teacher_tap
        self.check_taps([student_tap], [teacher_tap])
        self.level_pairs = parse_levels(levels)
        self.level_weights = parse_weights(level_weights, len(self.level_pairs))
        self._dummy_input_shape = tuple(dummy_input_shape)
        student_shapes, teacher_shapes = self._infer_level_shapes(dummy_input_shape)
        self._check_levels_exist(self.level_pairs, 'levels', student_shapes, teacher_shapes)
        return student_shapes, teacher_shapes

    def _check_levels_exist(self, pairs: Sequence[Tuple[int, int]], option: str, student_shapes: List[Shape],
                            teacher_shapes: List[List[Shape]]) -> None:
        for j, shapes in enumerate(teacher_shapes):
            for s, t in pairs:
                if not 0 <= s < len(student_shapes) or not 0 <= t < len(shapes):
                    raise ValueError(
                        f'{option} pairs student level {s} with teacher level {t}, but the student\'s '
                        f'{self.student_tap!r} outputs {len(student_shapes)} levels and the '
                        f'{self.teacher_label(j)}\'s {self.teacher_tap_of(j, self.teacher_tap)!r} '
                        f'{len(shapes)}; choose levels that exist on both sides')

    def setup_raw_levels(self, pairs: Sequence[LevelSpec], weights: Optional[Union[float, Sequence[float]]],
                         level_weights: Union[float, Sequence[float]], student_shapes: List[Shape],
                         teacher_shapes: List[List[Shape]]) -> None:
        """Sets ``raw_pairs`` and ``raw_weights``: the level pairs a
        distiller compares directly, without a flow (after
        :meth:`setup_levels`; none of them a student level of
        ``level_pairs``). ``weights`` defaults to ``level_weights`` when that
        is one float."""
        self.raw_pairs = parse_levels(pairs) if pairs else []
        if not self.raw_pairs:
            self.raw_weights = []
            return
        if weights is None:
            if not isinstance(level_weights, (int, float)):
                raise ValueError(f'levels.raw_pairs={list(pairs)} needs its own weights when levels.weights is '
                                 f'one per flow level ({list(level_weights)}): set levels.raw_weights '
                                 f'(raw_level_weights=), a float or one per raw level')
            weights = level_weights
        self.raw_weights = parse_weights(weights, len(self.raw_pairs), 'levels.raw_weights')
        both = sorted({s for s, _ in self.level_pairs} & {s for s, _ in self.raw_pairs})
        if both:
            raise ValueError(f'student level(s) {both} are in both levels.pairs (distilled through a flow) and '
                             f'levels.raw_pairs (distilled directly): name each level once; to add the raw '
                             f'loss on top of a flow set levels.raw_loss_weight instead')
        self._check_levels_exist(self.raw_pairs, 'levels.raw_pairs', student_shapes, teacher_shapes)

    def level_adapter(self, adapter: Optional[Union[str, dict]], s: int, t: int, s_shape: Shape,
                      t_shape: Shape, why: str = '') -> Optional[TeacherShape]:
        """The adapter from student level ``s`` to teacher level ``t``: built
        from the ``adapter`` config; with ``'auto'`` (:data:`AUTO_ADAPTER`, the
        default) a :class:`~fmkt_mm.distill.FeatureAdapter` where the shapes
        differ (logged with both shapes) and None where they agree; with
        None, None where the shapes agree, and a mismatch raises, naming both
        shapes and the fix (``why`` says what needs the teacher's shape)."""
        if adapter == AUTO_ADAPTER:
            if s_shape[1:] == t_shape[1:]:
                return None
            print_log(f'student level {s} {s_shape} -> teacher level {t} {t_shape}: a FeatureAdapter '
                      f'(1x1 conv {s_shape[1]} -> {t_shape[1]} channels, bilinear resize) maps it to the '
                      f"teacher's shape (adapter='auto'; adapter=None refuses unequal shapes)",
                      logger='current')
            adapter = dict(type='FeatureAdapter')
        if adapter is not None:
            return TeacherShape(build_from_registry(
                MODELS, adapter, 'adapter', in_channels=s_shape[1], out_channels=t_shape[1]))
        if s_shape[1:] != t_shape[1:]:
            raise ValueError(
                f'student level {s} has shape {s_shape} but teacher level {t} has shape {t_shape} '
                f'(B, C, H, W at a {self._dummy_input_shape} input){why}, and adapter=None asks for '
                f"equal shapes. Leave adapter out (the default 'auto' builds a FeatureAdapter: 1x1 conv "
                f'{s_shape[1]} -> {t_shape[1]} channels, bilinear resize), configure one, e.g. '
                f"adapter=dict(type='FeatureAdapter'), or pair other levels.")
        return None

    def teacher_adapter(self, j: int, k: int) -> Optional[nn.Module]:
        """The module mapping student space to teacher ``j``'s at level pair
        ``k`` (a :class:`TeacherShape` in ``teacher_adapters``), or None
        where the shapes agree."""
        adapter = self.teacher_adapters[j * len(self.level_pairs) + k]
        return adapter if isinstance(adapter, TeacherShape) else None

    def to_teacher_space(self, j: int, k: int, x: Tensor, target: Tensor) -> Tensor:
        """``x`` (student space, level pair ``k``; ``(B, C, H, W)``, or steps
        stacked ``(N, B, C, H, W)``) in the shape of teacher ``j``'s level
        ``target``: through its adapter, or as it is where the shapes agree."""
        return self._in_shape_of(self.teacher_adapter(j, k), x, target)

    def raw_to_teacher_space(self, j: int, k: int, x: Tensor, target: Tensor) -> Tensor:
        """Student level ``x`` of raw pair ``k`` (``raw_pairs``) in the shape
        of teacher ``j``'s level ``target``: through its adapter in
        ``raw_adapters`` (teacher-major), or as it is where the shapes agree."""
        adapter = self.raw_adapters[j * len(self.raw_pairs) + k]
        return self._in_shape_of(adapter if isinstance(adapter, TeacherShape) else None, x, target)

    @staticmethod
    def _in_shape_of(adapter: Optional[TeacherShape], x: Tensor, target: Tensor) -> Tensor:
        if adapter is None:
            return x
        size = tuple(target.shape[-2:])
        if x.dim() == 4:
            return adapter(x, size)
        return adapter(x.flatten(0, 1), size).unflatten(0, x.shape[:2])

    def upgrade_state_dict(self, state: dict, prefix: str = '') -> int:
        """Checkpoints saved while each separate flow held its adapter load
        (:func:`upgrade_adapter_keys`, in place)."""
        return upgrade_adapter_keys(state, prefix)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.upgrade_state_dict(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def _infer_level_shapes(self, dummy_input_shape) -> Tuple[List[Shape], List[List[Shape]]]:
        dummy = torch.zeros(1, *dummy_input_shape)
        was_training = self.student.training
        self.student.eval()  # a dummy batch must not touch BatchNorm statistics
        try:
            out = run_until_tapped(self.student, [self.student_tap],
                                   lambda: self.student(dummy, None, mode='tensor'), 'student')
        finally:
            self.student.train(was_training)
        student = as_levels(out[self.student_tap], self.student_tap, 'student')
        teachers = [self.teacher_levels(dummy, None, j) for j in range(len(self.teacher_models()))]
        return [tuple(x.shape) for x in student], [[tuple(x.shape) for x in t] for t in teachers]

    def teacher_levels(self, inputs: Tensor, data_samples: Optional[list], index: int = 0) -> List[Tensor]:
        """Teacher ``index``'s levels (its own tap, else ``teacher_tap``)."""
        tap = self.teacher_tap_of(index, self.teacher_tap)
        out = self.teacher_outputs(inputs, data_samples, [tap], index)
        levels = as_levels(out[tap], tap, self.teacher_label(index))
        if getattr(self, 'teacher_norm', False):
            levels = [standardise(x) for x in levels]
        return levels
