"""Progressive loss weights: schedules of the distiller's loss weights."""
from typing import TYPE_CHECKING, Dict, List, Union

from mmengine.hooks.hook import DATA_BATCH

from ..registry import HOOKS
from .loss_schedule_hook import LossScheduleHook
from .schedules import check_schedule, schedule_factor
from .utils import unwrap

if TYPE_CHECKING:
    from mmengine.runner import Runner
    from torch import nn


def _resolve(model, path: str):
    """``(owner, attribute)`` of a dotted attribute path on ``model``."""
    owner = model
    parts = path.split('.')
    for part in parts[:-1]:
        owner = getattr(owner, part, None)
        if owner is None:
            break
    if owner is None or not hasattr(owner, parts[-1]):
        raise AttributeError(f'LossWeightScheduleHook: the model has no attribute {path!r}; '
                             f'weights of this model: {sorted(weight_attributes(model))}')
    value = getattr(owner, parts[-1])
    numbers = value if isinstance(value, (list, tuple)) else [value]
    if not numbers or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        raise TypeError(f'LossWeightScheduleHook: {path!r} is {value!r}, not a number or a list '
                        f'of numbers')
    return owner, parts[-1]


def weight_attributes(model: 'nn.Module') -> List[str]:
    """Dotted paths of the loss weights a schedule can drive: float
    attributes (or lists of them) whose name ends in ``weight`` or
    ``weights``, on the distiller and its loss modules."""
    found = []
    for prefix, module in model.named_modules():
        if prefix.split('.')[0] in ('student', 'teacher'):
            continue
        for name, value in vars(module).items():
            if not name.endswith(('weight', 'weights')) or name.startswith('_'):
                continue
            numbers = value if isinstance(value, (list, tuple)) else [value]
            if numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
                found.append(f'{prefix}.{name}' if prefix else name)
    return found


@HOOKS.register_module()
class LossWeightScheduleHook(LossScheduleHook):
    """Progressive loss weights driven by the iteration.

    ``schedules`` maps a dotted attribute path on the distiller to a schedule
    (see :func:`schedule_factor`); before every iteration the attribute is
    set to its configured value times the schedule's factor (a list, such as
    the detection distiller's ``level_weights``, is scaled element-wise).
    Paths are e.g. ``flow_loss_weight`` and ``theta_loss_weight``
    (classification), ``level_weights`` (detection), or a loss module's
    ``loss_weight`` (``flow.loss_fn.loss_weight``, ``kd_loss.loss_weight``).
    The factors are logged as ``weight_factor/<path>``. Being a
    :class:`LossScheduleHook`, it also tells the metric losses the iteration
    (DKD's warm-up).

    Example: ramp the flow loss in over the first 2000 iterations and halve
    the FM-KT^Theta term at iteration 10000::

        custom_hooks = [dict(type='fmkt_mm.LossWeightScheduleHook', schedules={
            'flow_loss_weight': dict(type='linear', begin=0, end=2000),
            'theta_loss_weight': dict(type='step', milestones=[10000], factors=[1.0, 0.5])})]
    """

    priority = 'NORMAL'

    def __init__(self, schedules: Dict[str, dict]) -> None:
        if not schedules:
            raise ValueError('LossWeightScheduleHook needs schedules={attribute path: schedule}')
        for name, spec in schedules.items():
            check_schedule(name, dict(spec))
        self.schedules = {name: dict(spec) for name, spec in schedules.items()}
        self._base: Dict[str, Union[float, List[float]]] = {}

    def before_train(self, runner: 'Runner') -> None:
        model = unwrap(runner.model)
        for name in self.schedules:
            owner, attr = _resolve(model, name)
            value = getattr(owner, attr)
            self._base[name] = list(value) if isinstance(value, (list, tuple)) else float(value)

    def before_train_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None) -> None:
        super().before_train_iter(runner, batch_idx, data_batch)
        model = unwrap(runner.model)
        for name, spec in self.schedules.items():
            factor = schedule_factor(spec, runner.iter)
            owner, attr = _resolve(model, name)
            base = self._base[name]
            value = [factor * b for b in base] if isinstance(base, list) else factor * base
            setattr(owner, attr, value)
            runner.message_hub.update_scalar(f'train/weight_factor/{name}', factor)
