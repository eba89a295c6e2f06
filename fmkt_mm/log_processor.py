"""A log processor for distillation runs: one readable console line, every
term in the scalar logs.

A distiller logs, besides the summed losses, one value per flow step
(``flow_step3``, ``flow_l0_step3``) and, in detection, one term per distilled
level (``loss_flow_l0``, ``loss_theta_l2``, ...): 20 terms and more on every
line. :class:`DistillLogProcessor`

* averages the per-step terms over the logging window, as MMEngine averages
  the losses, so that the numbers logged together belong together;
* adds the sum over levels of every per-level term (``loss_flow`` =
  ``loss_flow_l0 + ... + loss_flow_l3``, each window-averaged);
* prints on the console (and in the text log) only the summed terms, while
  the per-step and per-level terms still reach the scalar logs
  (``vis_data/scalars.json``, TensorBoard, ...) at every logging interval.

:func:`fmkt_mm.apis.apply_distiller` selects it for every config with a
distiller block whose ``log_processor`` is MMEngine's stock one, keeping its
arguments.
"""
import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Tuple

from mmengine.runner import LogProcessor

from .registry import LOG_PROCESSORS

if TYPE_CHECKING:
    from mmengine.runner import Runner

#: a value per flow step: ``flow_step3``, ``flow_l0_step3``, ``val/flow_step1``
PER_STEP = re.compile(r'_step\d+$')
#: a term per distilled level: ``loss_flow_l0``, ``train/loss_theta_l3``
PER_LEVEL = re.compile(r'^(?P<base>.+)_l\d+$')
#: MMEngine's default averaged keys, plus the per-step terms
MEAN_PATTERN = r'.*(loss|time|data_time|grad_norm).*|.*_step\d+$'


@LOG_PROCESSORS.register_module()
class DistillLogProcessor(LogProcessor):
    """MMEngine's :class:`~mmengine.runner.LogProcessor` (same arguments)
    with per-step terms averaged, per-level terms summed, and both kept off
    the console line (they are in the scalar logs)."""

    def __init__(self, *args: Any, mean_pattern: str = MEAN_PATTERN, **kwargs: Any) -> None:
        super().__init__(*args, mean_pattern=mean_pattern, **kwargs)
        self._console = False

    def get_log_after_iter(self, runner: 'Runner', batch_idx: int, mode: str) -> Tuple[dict, str]:
        tag, _ = super().get_log_after_iter(runner, batch_idx, mode)
        self._console = True  # the same line again, without per-step/per-level terms
        try:
            _, log_str = super().get_log_after_iter(runner, batch_idx, mode)
        finally:
            self._console = False
        return tag, log_str

    def _collect_scalars(self, custom_cfg, runner, mode: str, reserve_prefix: bool = False):
        tag = super()._collect_scalars(custom_cfg, runner, mode, reserve_prefix)
        sums = OrderedDict()
        for key, value in tag.items():
            match = PER_LEVEL.match(key)
            if match and not PER_STEP.search(key) and isinstance(value, (int, float)):
                base = match.group('base')
                if base not in tag:
                    sums[base] = sums.get(base, 0.0) + float(value)
        tag.update(sums)
        if self._console:
            for key in [k for k in tag if PER_STEP.search(k) or
                        (PER_LEVEL.match(k) and PER_LEVEL.match(k).group('base') in sums)]:
                tag.pop(key)
        return tag
