"""Stop a run whose gradients diverge, before they reach the weights."""
import math
from typing import TYPE_CHECKING, Dict, List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.hooks.hook import DATA_BATCH
from mmengine.model import is_model_wrapper

from ..registry import HOOKS

if TYPE_CHECKING:
    from mmengine.runner import Runner


class NonFiniteGradientError(FloatingPointError):
    """The gradients of a training step are NaN, infinite, or beyond the bound."""


def _optimizers(optim_wrapper) -> List[torch.optim.Optimizer]:
    wrappers = optim_wrapper.values() if hasattr(optim_wrapper, 'values') else [optim_wrapper]
    return [wrapper.optimizer for wrapper in wrappers]


@HOOKS.register_module()
class FiniteGradientHook(Hook):
    """Refuse an optimizer step whose gradients are not finite (or whose norm
    exceeds ``max_norm``), with the iteration, the loss terms and the
    parameters named.

    A finite check on the losses misses a run whose losses stay finite while
    their gradients overflow (a loss weight of 1e39: ``loss_flow`` 1e37,
    ``grad_norm`` inf every iteration): such a run would finish with exit 0
    having learnt nothing. The check runs as a pre-step hook of each torch
    optimizer (after MMEngine's gradient clipping, before the update), so
    the weights stay those of the previous iteration and the last checkpoint
    stays the last good one.

    ``max_norm`` bounds the gradient norm as well (the norm before clipping
    when the optimizer wrapper clips: MMEngine's logged ``grad_norm``).
    Steps skipped by fp16 AMP's loss scaler (which finds the overflow
    itself) never reach the optimizer: they are not errors, and are counted
    as ``amp_skipped_steps`` in the log. :func:`fmkt_mm.apis.prepare_work_dir`
    adds this hook to every run.
    """

    priority = 'VERY_HIGH'

    def __init__(self, max_norm: Optional[float] = None) -> None:
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f'FiniteGradientHook: max_norm must be positive or None, got {max_norm}')
        self.max_norm = max_norm
        self._handles: list = []
        self._names: Dict[int, str] = {}
        self._runner: Optional['Runner'] = None
        self._scale: Optional[float] = None
        self.amp_skipped_steps = 0

    def before_train(self, runner: 'Runner') -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self._names = {id(p): name for name, p in model.named_parameters()}
        self._runner = runner
        self._handles = [optimizer.register_step_pre_hook(self._check)
                         for optimizer in _optimizers(runner.optim_wrapper)]

    def after_train(self, runner: 'Runner') -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- AMP's skipped steps --------------------------------------------------------------
    def before_train_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None) -> None:
        scaler = getattr(runner.optim_wrapper, 'loss_scaler', None)
        self._scale = float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else None

    def after_train_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        if self._scale is None:
            return
        if float(runner.optim_wrapper.loss_scaler.get_scale()) < self._scale:  # the scaler backed off
            self.amp_skipped_steps += 1
        runner.message_hub.update_scalar('train/amp_skipped_steps', self.amp_skipped_steps)

    # -- the check ------------------------------------------------------------------------
    def _check(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        params = [p for group in optimizer.param_groups for p in group['params'] if p.grad is not None]
        if not params:
            return
        with torch.no_grad():
            norms = torch.stack([n.float() for n in torch._foreach_norm([p.grad for p in params])])
            total = float(torch.linalg.vector_norm(norms))
        logged = self._logged_grad_norm()
        bounded = logged if logged is not None else total
        if math.isfinite(total) and (self.max_norm is None or bounded <= self.max_norm):
            return
        raise NonFiniteGradientError(self._message(params, norms, total, bounded))

    def _logged_grad_norm(self) -> Optional[float]:
        """The norm before clipping that MMEngine logged in this step, if it clips."""
        wrapper = getattr(self._runner, 'optim_wrapper', None)
        if not getattr(wrapper, 'clip_grad_kwargs', None):
            return None
        buffer = self._runner.message_hub.log_scalars.get('train/grad_norm')
        return float(buffer.current()) if buffer is not None else None

    def _message(self, params: list, norms: torch.Tensor, total: float, bounded: float) -> str:
        runner = self._runner
        iteration = runner.iter if runner is not None else None
        at = f'at iteration {iteration + 1} (runner.iter = {iteration})' if iteration is not None else ''
        finite = torch.isfinite(norms)
        if not bool(finite.all()):
            what = f'non-finite gradients {at}: the gradient norm is {total}'
            picked = [i for i in range(len(params)) if not bool(finite[i])]
        else:
            what = (f'gradient norm {bounded:.4g} {at} exceeds FiniteGradientHook(max_norm={self.max_norm})')
            picked = norms.argsort(descending=True).tolist()
        names = [self._names.get(id(params[i]), f'parameter {i}') for i in picked]
        shown = ', '.join(names[:5]) + (f', ... ({len(names) - 5} more)' if len(names) > 5 else '')
        terms = self._loss_terms()
        last = runner.message_hub.get_info('last_ckpt') if runner is not None else None
        return (f'{what}; parameters: {shown}.' + (f' Loss terms of the step: {terms}.' if terms else '') +
                ' The optimizer step was not taken: the weights are those of the previous iteration'
                + (f', and the last checkpoint {last} is intact' if last else '') +
                '. Lower the weight of the largest term, lower the learning rate, or clip gradients '
                '(optim_wrapper.clip_grad=dict(max_norm=...)).')

    def _loss_terms(self) -> str:
        model = self._runner.model if self._runner is not None else None
        model = model.module if model is not None and is_model_wrapper(model) else model
        log_vars = getattr(model, 'last_log_vars', None) or {}
        shown = []
        for name, value in log_vars.items():
            if 'loss' in name and isinstance(value, torch.Tensor):
                shown.append(f'{name} = {float(value.detach().float().mean()):.4g}')
        return ', '.join(shown)
