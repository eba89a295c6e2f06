"""Measuring the invertibility of the learnt flow at validation and test."""
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Union

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.hooks.hook import DATA_BATCH

from ..flow import FlowTransfer, RoundTrip
from ..registry import HOOKS
from .utils import unwrap

if TYPE_CHECKING:
    from mmengine.runner import Runner


@HOOKS.register_module()
class FlowRoundTripHook(Hook):
    """Logs the round-trip errors of the distiller's flow(s).

    For every validation (and test) batch the distiller's
    ``roundtrip_errors`` runs the flow forward and its reverse sampler back
    (:meth:`fmkt_mm.flow.FlowTransfer.reverse`), and the relative L2 errors
    over the whole set are logged as

    * ``val/flow/roundtrip_s2t2s``: student -> teacher -> student,
    * ``val/flow/roundtrip_t2s2t``: teacher -> student -> teacher,

    (``test/...`` in the test loop; detection adds ``..._l{level}`` per level).
    0 means an exactly invertible map; the explicit reverse sampler
    (``refine=0``) leaves the discretisation error, ``O(1/N)``; each
    ``refine`` iteration costs one more pass of ``N`` meta-encoder calls and
    brings the reverse closer to the exact inverse of the ``N``-step map,
    which it reaches when ``Lip(v) / N < 1``.

    Args:
        num_steps: flow steps ``N`` of the round trip; an int, a sequence
            (each is logged with a ``_steps{N}`` suffix, the last also
            without), or None for the distiller's ``eval_steps``.
        refine: fixed-point iterations per reverse step.
        max_batches: measure on the first ``max_batches`` batches only
            (None: all); the round trip runs the student once more per batch.
        on_test: measure in the test loop as well.
    """

    priority = 'NORMAL'

    def __init__(self, num_steps: Optional[Union[int, Sequence[int]]] = None, refine: int = 0,
                 max_batches: Optional[int] = None, on_test: bool = True) -> None:
        if num_steps is not None:
            num_steps = (num_steps, ) if isinstance(num_steps, int) else tuple(num_steps)
            if not num_steps or any(not isinstance(n, int) or n < 1 for n in num_steps):
                raise ValueError(f'FlowRoundTripHook num_steps must be integers >= 1, got {num_steps}')
        if not isinstance(refine, int) or refine < 0:
            raise ValueError(f'FlowRoundTripHook refine must be an integer >= 0, got {refine!r}')
        self.num_steps, self.refine = num_steps, refine
        self.max_batches, self.on_test = max_batches, on_test
        self._sums: Dict[str, RoundTrip] = {}

    def before_run(self, runner: 'Runner') -> None:
        """Refuses, before any training, a distiller whose flows have no
        reverse (:meth:`~fmkt_mm.flow.FlowTransfer.check_invertible`): the
        first validation would fail."""
        for module in unwrap(runner.model).modules():
            if isinstance(module, FlowTransfer):
                module.check_invertible('FlowRoundTripHook', fix='remove the hook from custom_hooks or drop flow.width')

    def _measure(self, runner, batch_idx, data_batch):
        if self.max_batches is not None and batch_idx >= self.max_batches:
            return
        model = unwrap(runner.model)
        if not hasattr(model, 'roundtrip_errors'):
            raise ValueError(f'FlowRoundTripHook needs a distiller with a flow '
                             f'(roundtrip_errors); got {type(model).__name__}')
        steps = self.num_steps or (model.eval_steps, )
        with torch.no_grad():
            data = model.data_preprocessor(data_batch, False)
            for n in steps:
                errors = model.roundtrip_errors(data['inputs'], data.get('data_samples'),
                                                num_steps=n, refine=self.refine)
                for key, value in errors.items():
                    key = f'{key}_steps{n}' if len(steps) > 1 else key
                    self._sums[key] = self._sums[key] + value if key in self._sums else value
                    if len(steps) > 1 and n == steps[-1]:
                        plain = key.rsplit('_steps', 1)[0]
                        self._sums[plain] = self._sums[plain] + value if plain in self._sums else value

    def _report(self, runner, mode):
        if not self._sums:
            return
        parts = []
        for key in sorted(self._sums):
            total = torch.stack([self._sums[key].squared_error, self._sums[key].squared_norm])
            all_reduce(total)  # sums over ranks; a no-op in a single process
            value = RoundTrip(total[0], total[1]).relative
            runner.message_hub.update_scalar(f'{mode}/flow/roundtrip_{key}', value)
            parts.append(f'{key}: {value:.3e}')
        runner.logger.info(f'{mode} flow round-trip relative L2 error (refine={self.refine}): '
                           + ', '.join(parts))
        self._sums = {}

    def before_val_epoch(self, runner: 'Runner') -> None:
        self._sums = {}

    def before_test_epoch(self, runner: 'Runner') -> None:
        self._sums = {}

    def after_val_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None,
                       outputs: Optional[Sequence] = None) -> None:
        self._measure(runner, batch_idx, data_batch)

    def after_test_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None,
                        outputs: Optional[Sequence] = None) -> None:
        if self.on_test:
            self._measure(runner, batch_idx, data_batch)

    def after_val_epoch(self, runner: 'Runner', metrics: Optional[Dict[str, float]] = None) -> None:
        self._report(runner, 'val')

    def after_test_epoch(self, runner: 'Runner', metrics: Optional[Dict[str, float]] = None) -> None:
        self._report(runner, 'test')
