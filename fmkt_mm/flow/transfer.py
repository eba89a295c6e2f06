"""FM-KT's flow: the transport (:mod:`.transport`) with the FM-KT objective
(:mod:`.objective`). See :mod:`fmkt_mm.flow.transport` for the loop and its
reverse sampler."""
from typing import Optional, Sequence, Union

from torch import nn

from .objective import FMKTObjective
from .paths import FlowPath
from .transport import (FlowOutput, FlowTransport, RoundTrip, StepPlan, combine, endpoint_mixing,
                        plan_steps, step_coefficients)

__all__ = ['FlowTransfer', 'FlowTransport', 'FlowOutput', 'RoundTrip', 'StepPlan', 'combine',
           'endpoint_mixing', 'plan_steps', 'step_coefficients']


class FlowTransfer(FMKTObjective, FlowTransport):
    """A learnable flow from student to teacher representations, and its
    FM-KT training loss.

    Args:
        channels: channels ``C`` of the representation (``(B, C)`` or
            ``(B, C, H, W)``); the flow is shape-preserving.
        path: ``'rectified'`` (default), ``'vp'``, ``'ve'`` or a dict with
            ``type`` and the path's arguments.
        encoder: meta-encoder config, ``dict(type='mlp'|'conv'|'transformer',
            ...)``; ``channels`` is filled in.
        num_steps: training steps ``N`` (and the default for sampling).
        num_steps_choices: if given, each training call draws ``N`` from it
            (e.g. ``(1, 2, 4, 8, 16)``).
        parameterization: ``'velocity'`` (the meta-encoder predicts
            ``dZ/dt``) or ``'endpoint'`` (it predicts ``X_T - Z``, a residual
            so that an untrained flow is the identity in both).
        update: ``'ddim'`` (re-interpolate onto the path) or ``'euler'``.
        loss: metric loss ``D`` (a built module with ``forward_steps``, or
            the config of one found in ``LOSSES``, such as fmkt_mm's
            ``dict(type='PKDLoss')``), applied to every step with weight
            ``1 / N`` times its own ``loss_weight``.
        head: module mapping an endpoint estimate to the compared output
            (e.g. pool + linear for logits); identity when None.
        beta_d: pair decoupling; a fraction ``1 - beta_d`` of the batch gets
            its targets (and labels) permuted within that fraction.
        condition: a conditional flow network: a condition config
            (``dict(type='pooled' | 'level' | 'class', ...)``, a list of them,
            see :mod:`fmkt_mm.flow.conditions`) or a built condition module.
            The meta-encoder is then built with ``context_dim`` set to the
            condition's ``dim``, and every run computes the context from
            ``X_S`` (and the labels in training) unless one is passed.
        condition_level: the level / task index this flow passes to its
            condition (a ``'level'`` condition shared by several flows).
        compile: compile the meta-encoder's step with ``torch.compile``
            (``True``, or a dict of ``torch.compile`` arguments such as
            ``dict(mode='reduce-overhead')``, which on a GPU also captures
            CUDA graphs). Numerically the eager step within float
            tolerance; never needed for the loop's efficiency.
    """

    def __init__(self,
                 channels: int,
                 path: Union[str, dict, FlowPath] = 'rectified',
                 encoder: Union[str, dict, nn.Module] = 'mlp',
                 num_steps: int = 8,
                 num_steps_choices: Optional[Sequence[int]] = None,
                 parameterization: str = 'velocity',
                 update: str = 'ddim',
                 loss: Optional[Union[dict, nn.Module]] = None,
                 head: Optional[nn.Module] = None,
                 beta_d: float = 1.0,
                 condition: Optional[Union[str, dict, list, nn.Module]] = None,
                 condition_level: int = 0,
                 compile: Union[bool, dict] = False):
        FlowTransport.__init__(self, channels, path=path, encoder=encoder, num_steps=num_steps,
                               parameterization=parameterization, update=update, head=head,
                               condition=condition, condition_level=condition_level, compile=compile)
        self.init_objective(loss, beta_d, num_steps_choices)
