"""What every distiller shares: student, frozen teacher, taps, checkpoints,
switching distillation off, and the check for non-finite losses."""
import copy
import logging
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import MODELS as ROOT_MODELS
from torch import nn

from ..flow.plan import check_step_counts
from ..state_fit import STUDENT_PREFIX, TEACHER_PREFIX
from .loss_terms import NonFiniteLossError, check_finite, parse_loss_terms  # noqa: F401 (also imported from here)
from .taps import get_module, run_until_tapped
from .teacher import TEACHER_FLOWS, TEACHER_KEYS, TeacherSet, build_teacher, build_teachers

#: losses-dict keys ending with this hold per-step values, logged only
STEP_LOG_SUFFIX = '_step'


class BaseDistiller(BaseModel):
    """Wraps a student (any OpenMMLab model config) and a frozen teacher.

    The distiller's data preprocessor is the student's: both models see the
    same preprocessed batch. The teacher stays in eval mode for the whole run
    (its BatchNorm statistics never move), has no gradients, is skipped by
    ``init_weights``, and runs only until its tapped modules have fired.

    Switching distillation off (:class:`~fmkt_mm.hooks.StopDistillationHook`
    sets :attr:`distillation_enabled` to False): :meth:`forward` in mode
    ``'loss'`` then returns :meth:`task_losses` instead of :meth:`loss`, the
    student's task loss alone, without running the teacher. Trainable parameters that
    the task loss does not reach (flows, adapters) are kept in the graph with
    a zero-weighted term, so DDP with ``find_unused_parameters=False`` keeps
    working and their gradients are exactly zero.

    Non-finite losses: :meth:`parse_losses` (called by ``train_step``, also
    under DDP) raises :class:`NonFiniteLossError` naming the loss terms and
    the iteration before the optimizer step, so the weights are never updated
    from a NaN/inf loss. Under DDP the check is agreed over all ranks so that
    every process stops.

    Args:
        student: model config of the student (e.g. the ``model`` of a stock
            mmpretrain/mmdet config).
        teacher: ``dict(config=..., checkpoint=..., strict=True,
            allow_unsafe_pickle=False)``; ``config`` is a config file
            (local or ``mmdet::``/``mmpretrain::``) or a model dict. ``None``
            for online variants without a teacher.
        data_preprocessor: merged in by MMEngine's Runner from the config's
            top level; used for the student if its own config has none.
        teachers: several teachers instead of ``teacher``: a list of
            ``dict(config=..., checkpoint=..., weight=1.0, tap=None,
            name=None)`` (:func:`~fmkt_mm.distill.teacher.build_teachers`);
            :attr:`teacher` is then a :class:`TeacherSet`. Distillers that
            take it also take ``teacher_flows`` (``'separate'``: a flow per
            teacher; ``'shared'``: one flow conditioned on the teacher) and
            ``deploy_teacher`` (whose flow predicts in deploy mode 'flow': a
            teacher's index or name, or ``'mean'``, the weighted mean of all).
    """

    def __init__(self, student: dict, teacher: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None,
                 teachers: Optional[Sequence[dict]] = None, teacher_flows: str = 'separate',
                 deploy_teacher: Union[str, int] = 'mean') -> None:
        student = copy.deepcopy(dict(student))  # building may edit it (mmdet's Deformable DETR does)
        if data_preprocessor is not None:
            student.setdefault('data_preprocessor', data_preprocessor)
        student_model = ROOT_MODELS.build(student)
        super().__init__(data_preprocessor=student_model.data_preprocessor, init_cfg=init_cfg)
        self.student = student_model
        self.teacher = None
        if teacher is not None and teachers is not None:
            raise ValueError('give either teacher=dict(...) or teachers=[dict(...), ...], not both')
        if teacher is not None:
            teacher = dict(teacher)
            unknown = set(teacher) - set(TEACHER_KEYS)
            if unknown or 'config' not in teacher:
                raise ValueError(f'teacher must be dict(config=..., checkpoint=..., strict=True, '
                                 f'allow_unsafe_pickle=False); got keys {sorted(teacher)}')
            self.teacher = build_teacher(data_preprocessor=data_preprocessor, **teacher)
        elif teachers is not None:
            self.teacher = build_teachers(teachers, data_preprocessor)
        if teacher_flows not in TEACHER_FLOWS:
            raise ValueError(f'unknown teacher_flows {teacher_flows!r}; choose one of {list(TEACHER_FLOWS)}')
        #: several teachers: ``'separate'`` flows or one ``'shared'`` flow
        self.teacher_flows = teacher_flows
        #: several teachers: the index whose flow predicts, or None for the weighted mean
        self.deploy_teacher = self._teacher_index(deploy_teacher)
        #: False once distillation is switched off: ``loss`` returns the task loss alone
        self.distillation_enabled = True

    #: the student's parts that the task packages' own hooks reach through
    #: ``runner.model`` (mmdet's YOLOXModeSwitchHook sets ``bbox_head.use_l1``)
    STUDENT_PARTS = ('backbone', 'neck', 'bbox_head', 'rpn_head', 'roi_head', 'decode_head', 'auxiliary_head')

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            student = self._modules.get('student')
            if name in self.STUDENT_PARTS and student is not None and hasattr(student, name):
                return getattr(student, name)  # the deployed model's part, as a stock hook expects
            raise

    # -- one or several teachers ---------------------------------------------------------
    @property
    def multi_teacher(self) -> bool:
        """True when the distiller was built with ``teachers=[...]``."""
        return isinstance(self.teacher, TeacherSet)

    def teacher_models(self) -> List[nn.Module]:
        """Every teacher, in config order (none for an online variant)."""
        if self.teacher is None:
            return []
        return list(self.teacher) if self.multi_teacher else [self.teacher]

    def teacher_weights(self) -> List[float]:
        """The teachers' relative weights (summing to 1)."""
        return list(self.teacher.weights) if self.multi_teacher else [1.0] * len(self.teacher_models())

    def teacher_label(self, j: int) -> str:
        """How error messages name teacher ``j``."""
        return f'teacher {j} ({self.teacher.names[j]})' if self.multi_teacher else 'teacher'

    def deployed_teachers(self) -> Tuple[List[int], List[float]]:
        """``(teacher indices, weights)`` whose flows predict in deploy mode
        'flow': the chosen teacher, or all with their weights."""
        if self.deploy_teacher is not None:
            return [self.deploy_teacher], [1.0]
        count = max(len(self.teacher_models()), 1)
        return list(range(count)), (self.teacher_weights() or [1.0])

    def _teacher_index(self, which: Union[str, int]) -> Optional[int]:
        if which == 'mean':
            return None
        count = len(self.teacher_models())
        names = list(self.teacher.names) if self.multi_teacher else []
        if isinstance(which, str) and which in names:
            return names.index(which)
        if isinstance(which, int) and not isinstance(which, bool) and 0 <= which < max(count, 1):
            return which
        raise ValueError(f"deploy_teacher must be 'mean', a teacher's index (0..{max(count, 1) - 1}) "
                         f'or name {names}, got {which!r}')

    # -- distillation switched off -------------------------------------------------
    def task_losses(self, inputs: torch.Tensor, data_samples: Optional[list]) -> Dict[str, torch.Tensor]:
        """The losses once distillation is switched off: the student's own
        task losses under their usual names, the teacher not run. Subclasses
        whose prediction runs through distillation modules (a flow that
        feeds the head) override this to train the deployed model.
        mmpretrain's single ``loss`` term is named ``loss_cls``, as in the
        distillers' own losses."""
        losses = dict(self.student.loss(inputs, data_samples))
        if 'loss' in losses and 'loss_cls' not in losses:
            losses['loss_cls'] = losses.pop('loss')
        return losses

    def keep_in_graph(self, losses: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Add ``0 * sum(p)`` of every trainable parameter outside the
        student to the first loss term: those parameters then get a zero
        gradient instead of none, which DDP without
        ``find_unused_parameters`` requires. Loss names are unchanged."""
        extra = [p for name, p in self.named_parameters()
                 if p.requires_grad and not name.startswith(STUDENT_PREFIX)]
        if not extra:
            return losses
        zero = sum(p.sum() for p in extra) * 0.0
        for key, value in losses.items():
            if 'loss' not in key:
                continue
            if isinstance(value, torch.Tensor):
                losses[key] = value + zero.to(value.dtype)
                return losses
            if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
                losses[key] = [value[0] + zero.to(value[0].dtype)] + list(value[1:])
                return losses
        losses['loss_unused_params'] = zero
        return losses

    # -- non-finite losses ---------------------------------------------------------------
    def parse_losses(self, losses: Dict[str, torch.Tensor]
                     ) -> Tuple[torch.Tensor, Dict[str, Union[torch.Tensor, float]]]:
        """MMEngine's parsing, plus: a 1-D tensor under a key ending in
        ``_step`` holds one logged value per flow step and becomes
        ``{key}1``, ``{key}2``, ... (``flow_step1``, ``flow_l0_step2``),
        read in one transfer instead of one per step."""
        losses = dict(losses)
        per_step = {key: losses.pop(key) for key in list(losses)
                    if key.endswith(STEP_LOG_SUFFIX) and isinstance(losses[key], torch.Tensor)
                    and losses[key].dim() == 1}
        loss, log_vars = parse_loss_terms(losses)
        check_finite(log_vars)  # a NaN/inf stops the run before the update
        self.last_log_vars = log_vars  # named by FiniteGradientHook if the gradients diverge
        for key, values in per_step.items():
            for k, value in enumerate(values.float().tolist(), start=1):  # read, never differentiated
                log_vars[f'{key}{k}'] = value
        return loss, log_vars

    # -- the frozen teacher ------------------------------------------------------
    def train(self, mode: bool = True) -> 'BaseDistiller':
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # BatchNorm statistics and dropout stay frozen
        return self

    def init_weights(self) -> None:
        """Initialise everything but the teacher, whose weights are loaded."""
        for name, child in self.named_children():
            if name != 'teacher' and hasattr(child, 'init_weights'):
                child.init_weights()

    # -- what is deployed -------------------------------------------------------------
    #: ``'student'``: the plain student predicts (the exported checkpoint
    #: predicts exactly as the distiller); ``'flow'``: prediction runs the flow
    deploy_mode = 'student'

    @classmethod
    def deploy_mode_of(cls, cfg: dict) -> str:
        """The :attr:`deploy_mode` of a distiller built from ``cfg`` (its
        ``model`` config), without building it: the one answer that export,
        hooks and benchmarks read."""
        return cls.deploy_mode

    # -- MMEngine's three modes ------------------------------------------------------
    def forward(self, inputs: torch.Tensor, data_samples: Optional[list] = None,
                mode: str = 'tensor') -> Union[Dict[str, torch.Tensor], list, tuple, torch.Tensor]:
        """MMEngine's dispatch: ``'loss'`` (the distillation losses, or the
        task losses alone once distillation is switched off), ``'predict'``
        (the deployed model's predictions), ``'tensor'`` (its raw outputs)."""
        if mode == 'loss':
            if not self.distillation_enabled:
                return self.keep_in_graph(self.task_losses(inputs, data_samples))
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self._forward(inputs, data_samples)
        raise RuntimeError(f'invalid mode {mode!r}; use loss, predict or tensor')

    def predict(self, inputs: torch.Tensor, data_samples: Optional[list] = None) -> list:
        """What the deployed model predicts; the plain student by default."""
        return self.student.predict(inputs, data_samples)

    def _forward(self, inputs, data_samples=None):
        """The deployed model's raw outputs (``mode='tensor'``); the student's by default."""
        return self.student(inputs, data_samples, mode='tensor')

    # -- the settings that hooks change ---------------------------------------------------------
    # The hooks change a distiller through these methods (each setting has one
    # owner; a distiller without it fails with a message naming the hook's need),
    # with one stated exception: LossWeightScheduleHook scales the numeric
    # attributes its config names (loss weights), checked when training starts.
    def set_distillation(self, enabled: bool) -> None:
        """Switch the distillation terms on or off (:meth:`task_losses` when off)."""
        self.distillation_enabled = bool(enabled)

    def flow_modules(self) -> List[torch.nn.Module]:
        """Every flow of the distiller (training flows and their EMA copies)."""
        from ..flow import FlowTransfer
        return [m for m in self.modules() if isinstance(m, FlowTransfer)]

    def _unsupported(self, setting: str, needs: str):
        return TypeError(f'{type(self).__name__} has no {setting}: {needs}')

    # Each ``set_*`` calls its ``check_*`` first, which a hook may also call
    # on every scheduled value before training.
    def check_train_steps(self, steps: int) -> None:
        if not self.flow_modules():
            raise self._unsupported('flows', 'a number of flow steps needs an FM-KT distiller')
        check_step_counts(steps)

    def set_train_steps(self, steps: int) -> None:
        """Train every flow with ``steps`` steps (see :meth:`FlowTransfer.set_train_steps`)."""
        self.check_train_steps(steps)
        for flow in self.flow_modules():
            flow.set_train_steps(steps)

    def check_eval_steps(self, steps: int, extra: Sequence[int] = ()) -> None:
        if not hasattr(self, 'eval_steps') or not self.flow_modules():
            raise self._unsupported('flows to evaluate', 'flow step counts need an FM-KT distiller')
        check_step_counts(steps, *extra)

    def set_eval_steps(self, steps: int, extra: Sequence[int] = ()) -> None:
        """Predict with the ensemble of ``steps`` flow steps, and also
        predict with each count in ``extra`` in the same pass."""
        self.check_eval_steps(steps, extra)
        self.eval_steps = steps
        self.extra_eval_steps = list(extra)

    def check_level_scales(self, scales: Sequence[float]) -> None:
        raise self._unsupported('distilled levels', 'per-level scales need a DetectionDistiller')

    def set_level_scales(self, scales: Sequence[float]) -> None:
        """Multiply each distilled level's weight by its entry of ``scales``."""
        self.check_level_scales(scales)
        self.level_scales = [float(s) for s in scales]

    def check_curriculum(self, fraction: float) -> None:
        raise self._unsupported('per-sample targets to rank',
                                'a curriculum ranks samples by the teacher\'s class confidence '
                                '(ClassificationDistiller)')

    def set_curriculum(self, fraction: float) -> None:
        """Distil on the ``fraction`` of each batch the teacher is most confident on."""
        self.check_curriculum(fraction)
        self.curriculum_fraction = float(fraction)

    @torch.no_grad()
    def teacher_outputs(self, inputs: torch.Tensor, data_samples: Optional[list], paths: Sequence[str],
                        index: int = 0) -> Dict[str, object]:
        """Outputs of a teacher's tapped modules (teacher ``index`` of
        several); its forward stops there."""
        teacher = self.teacher_models()[index]
        return run_until_tapped(teacher, paths, lambda: teacher(inputs, data_samples, mode='tensor'),
                                self.teacher_label(index))

    def teacher_tap_of(self, j: int, default: str) -> str:
        """Teacher ``j``'s tap: its entry's ``tap``, else ``default``."""
        tap = self.teacher.taps[j] if self.multi_teacher else None
        return tap or default

    def check_taps(self, student_paths: Sequence[str] = (), teacher_paths: Sequence[str] = ()) -> None:
        """Fail at build time, not at the first iteration, on unknown
        paths (each teacher's own ``tap`` replaces ``teacher_paths``)."""
        for path in student_paths:
            get_module(self.student, path, 'student')
        for j, teacher in enumerate(self.teacher_models()):
            for path in teacher_paths:
                get_module(teacher, self.teacher_tap_of(j, path), self.teacher_label(j))

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
        if own and not any(k.startswith(prefix + STUDENT_PREFIX) or k.startswith(prefix + TEACHER_PREFIX)
                           for k in own):
            student_keys = set(self.student.state_dict())
            mapped = 0
            for key in own:
                bare = key[len(prefix):]
                if bare in student_keys:
                    state_dict[prefix + STUDENT_PREFIX + bare] = state_dict.pop(key)
                    mapped += 1
            complete = mapped == len(student_keys) and mapped == len(own)
            print_log(f'loaded a plain student checkpoint: mapped {mapped}/{len(student_keys)} '
                      f'student tensors ({len(own) - mapped} keys did not match the student)',
                      logger='current', level=logging.INFO if complete else logging.WARNING)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


def hard_labels(data_samples: Optional[list]) -> Optional[torch.Tensor]:
    """``(B,)`` class indices of mmpretrain data samples (argmax of soft
    scores after mixup/cutmix), or None when the samples carry no labels."""
    if not data_samples:
        return None
    if 'gt_score' in data_samples[0]:
        return torch.stack([s.gt_score for s in data_samples]).argmax(1)
    if 'gt_label' in data_samples[0]:
        return torch.cat([s.gt_label for s in data_samples])
    return None


def check_roundtrip_weight(weight: float, flows: Iterable[torch.nn.Module]) -> float:
    """``roundtrip_loss_weight``, refused below 0 and, above 0, for flows
    that cannot be inverted (:meth:`~fmkt_mm.flow.FlowTransfer.check_invertible`)."""
    if weight < 0:
        raise ValueError(f'roundtrip_loss_weight must be >= 0, got {weight}')
    if weight > 0:
        for flow in flows:
            flow.check_invertible('round-trip loss (roundtrip_loss_weight)',
                                  fix='drop flow.width or the round-trip loss')
    return weight
