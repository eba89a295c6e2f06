"""The exponential moving average of a distiller's flows.

:class:`FlowEMA` gives a distiller an EMA copy of its ``flows`` for
inference (``ema_flows``, with its update count ``ema_updates`` as a buffer,
so a resumed run continues it) and the update itself;
:class:`~fmkt_mm.hooks.FlowEMAHook` calls :meth:`FlowEMA.update_ema` before
every training iteration, as mmdet's ``MeanTeacherHook`` advances its
teacher.
"""
import copy
import math
import warnings
from typing import Optional

import torch
from torch import nn


class FlowEMA:
    """The EMA part of a distiller with ``flows`` and a ``deploy_mode``."""

    ema_flows: Optional[nn.Module]

    def setup_ema(self, momentum: Optional[float], warmup: Optional[int]) -> None:
        """Keep an EMA of ``self.flows`` when ``momentum`` is set (deploy
        mode ``'flow'`` only: in ``'student'`` inference never runs the
        flows)."""
        self.ema_momentum, self.ema_warmup = momentum, warmup
        self.ema_flows = None
        if momentum is None:
            return
        if self.deploy_mode == 'student':
            warnings.warn("ema_momentum is ignored with deploy_mode='student': inference does not run the flows")
            self.ema_momentum = None
            return
        self.ema_flows = copy.deepcopy(self.flows).requires_grad_(False).eval()
        self.register_buffer('ema_updates', torch.zeros((), dtype=torch.long))

    def _inference_flows(self) -> nn.Module:
        """The flows inference runs: the EMA's in eval mode when kept."""
        return self.ema_flows if self.ema_flows is not None and not self.training else self.flows

    def ema_momentum_at(self, update: int) -> float:
        """The EMA's momentum at its ``update``-th update (from 1)."""
        if self.ema_warmup is None:
            return self.ema_momentum
        return (1 - self.ema_momentum) * math.exp(-update / self.ema_warmup) + self.ema_momentum

    @torch.no_grad()
    def update_ema(self) -> None:
        """``ema = (1 - m) * ema + m * flow`` for every parameter (``m`` warmed
        up, see ``ema_warmup``); buffers are copied. Called by
        :class:`~fmkt_mm.hooks.FlowEMAHook` before every training iteration
        (after the previous optimizer update)."""
        if self.ema_flows is None:
            return
        self.ema_updates += 1
        momentum = self.ema_momentum_at(int(self.ema_updates))
        # one operator for all parameters (and one for all buffers), not one per tensor
        torch._foreach_lerp_(list(self.ema_flows.parameters()), list(self.flows.parameters()), momentum)
        buffers = list(self.flows.buffers())
        if buffers:
            torch._foreach_copy_(list(self.ema_flows.buffers()), buffers)

    def check_ema_driven(self) -> None:
        """Refuse a training step of a distiller whose EMA was never
        advanced (a stale EMA would predict silently)."""
        if self.training and self.ema_flows is not None and int(self.ema_updates) == 0:
            raise RuntimeError(
                'the flows keep an EMA (ema_momentum) but it was never updated before this training '
                "step: add custom_hooks=[dict(type='fmkt_mm.FlowEMAHook')] (fmkt_mm.DistillRunner adds "
                'it), or call update_ema() before each training step')
