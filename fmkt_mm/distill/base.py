"""What every distiller shares: student, frozen teacher, taps, checkpoints."""
import re
from typing import Dict, Optional, Sequence

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import MODELS as ROOT_MODELS
from torch import nn

from .taps import get_module, run_until_tapped
from .teacher import build_teacher

STUDENT_PREFIX = 'student.'


class BaseDistiller(BaseModel):
    """Wraps a student (any OpenMMLab model config) and a frozen teacher.

    The distiller's data preprocessor is the student's: both models see the
    same preprocessed batch. The teacher stays in eval mode for the whole run
    (its BatchNorm statistics never move), has no gradients, is skipped by
    ``init_weights``, and runs only until its tapped modules have fired.

    Args:
        student: model config of the student (e.g. the ``model`` of a stock
            mmpretrain/mmdet config).
        teacher: ``dict(config=..., checkpoint=..., strict=True,
            allow_unsafe_pickle=False)``; ``config`` is a config file
            (local or ``mmdet::``/``mmpretrain::``) or a model dict. ``None``
            for online variants without a teacher.
        data_preprocessor: merged in by MMEngine's Runner from the config's
            top level; used for the student if its own config has none.
    """

    def __init__(self, student: dict, teacher: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None):
        student = dict(student)
        if data_preprocessor is not None:
            student.setdefault('data_preprocessor', data_preprocessor)
        student_model = ROOT_MODELS.build(student)
        super().__init__(data_preprocessor=student_model.data_preprocessor, init_cfg=init_cfg)
        self.student = student_model
        self.teacher = None
        if teacher is not None:
            teacher = dict(teacher)
            unknown = set(teacher) - {'config', 'checkpoint', 'strict', 'allow_unsafe_pickle',
                                      'allow_random_init'}
            if unknown or 'config' not in teacher:
                raise ValueError(f'teacher must be dict(config=..., checkpoint=..., strict=True, '
                                 f'allow_unsafe_pickle=False); got keys {sorted(teacher)}')
            self.teacher = build_teacher(data_preprocessor=data_preprocessor, **teacher)

    # -- the frozen teacher ------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # BatchNorm statistics and dropout stay frozen
        return self

    def init_weights(self):
        """Initialise everything but the teacher, whose weights are loaded."""
        for name, child in self.named_children():
            if name != 'teacher' and hasattr(child, 'init_weights'):
                child.init_weights()

    @torch.no_grad()
    def teacher_outputs(self, inputs, data_samples, paths: Sequence[str]) -> Dict[str, object]:
        """Outputs of the teacher's tapped modules; its forward stops there."""
        return run_until_tapped(self.teacher, paths,
                                lambda: self.teacher(inputs, data_samples, mode='tensor'), 'teacher')

    def check_taps(self, student_paths: Sequence[str] = (), teacher_paths: Sequence[str] = ()):
        """Fail at build time, not at the first iteration, on unknown paths."""
        for path in student_paths:
            get_module(self.student, path, 'student')
        if self.teacher is not None:
            for path in teacher_paths:
                get_module(self.teacher, path, 'teacher')

    # -- checkpoints ---------------------------------------------------------------
    def student_state_dict(self) -> Dict[str, torch.Tensor]:
        """The plain student's weights (keys as in the stock model)."""
        return {k[len(STUDENT_PREFIX):]: v for k, v in self.state_dict().items()
                if k.startswith(STUDENT_PREFIX)}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # ``load_from=<plain student checkpoint>``: map the stock model's keys
        # onto the student. Runs before the children read the same dict.
        own = [k for k in state_dict if k.startswith(prefix)]
        if own and not any(k.startswith(prefix + STUDENT_PREFIX) or k.startswith(prefix + 'teacher.')
                           for k in own):
            student_keys = set(self.student.state_dict())
            mapped = 0
            for key in own:
                bare = key[len(prefix):]
                if bare in student_keys:
                    state_dict[prefix + STUDENT_PREFIX + bare] = state_dict.pop(key)
                    mapped += 1
            print_log(f'loaded a plain student checkpoint: mapped {mapped}/{len(student_keys)} '
                      f'student tensors ({len(own) - mapped} keys did not match the student)',
                      logger='current')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


def hard_labels(data_samples) -> Optional[torch.Tensor]:
    """``(B,)`` class indices of mmpretrain data samples (argmax of soft
    scores after mixup/cutmix), or None when the samples carry no labels."""
    if not data_samples:
        return None
    if 'gt_score' in data_samples[0]:
        return torch.stack([s.gt_score for s in data_samples]).argmax(1)
    if 'gt_label' in data_samples[0]:
        return torch.cat([s.gt_label for s in data_samples])
    return None


def prefixed(losses: Dict[str, torch.Tensor], old: str, new: str) -> Dict[str, torch.Tensor]:
    return {re.sub(f'^{old}', new, k): v for k, v in losses.items()}
