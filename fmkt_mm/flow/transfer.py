"""FM-KT's flow: the transport (:mod:`.transport`, with the step plan of
:mod:`.plan` and the reverse sampler of :mod:`.reverse`) and the FM-KT
objective (:mod:`.objective`)."""
from typing import Any, Optional, Sequence, Union

from torch import nn

from .objective import FMKTObjective
from .transport import FlowTransport

__all__ = ['FlowTransfer']


class FlowTransfer(FMKTObjective, FlowTransport):
    """A learnable flow from student to teacher representations, and its
    FM-KT training loss.

    Args:
        channels: channels ``C`` of the representation (``(B, C)`` or
            ``(B, C, H, W)``); the flow is shape-preserving.
        num_steps_choices: if given, each training call draws ``N`` from it
            (e.g. ``(1, 2, 4, 8, 16)``).
        loss: metric loss ``D`` (a built module with ``forward_steps``, or
            the config of one found in ``LOSSES``, such as fmkt_mm's
            ``dict(type='PKDLoss')``), applied to every step with weight
            ``1 / N`` times its own ``loss_weight``.
        beta_d: pair decoupling; a fraction ``1 - beta_d`` of the batch gets
            its targets (and labels) permuted within that fraction.
        **transport: the transport's arguments (:class:`FlowTransport`:
            ``path``, ``encoder``, ``num_steps``, ``parameterization``,
            ``update``, ``head``, ``condition``, ``condition_level``,
            ``compile``).
    """

    def __init__(self, channels: int, num_steps_choices: Optional[Sequence[int]] = None,
                 loss: Optional[Union[dict, nn.Module]] = None, beta_d: float = 1.0, **transport: Any) -> None:
        FlowTransport.__init__(self, channels, **transport)
        self.init_objective(loss, beta_d, num_steps_choices)
