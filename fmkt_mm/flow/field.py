"""Any velocity field as a meta-encoder: :class:`FieldEncoder`."""
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn


class FieldEncoder(nn.Module):
    """Any module ``field(state, t, context) -> velocity`` (an oracle, a
    hand-written field) in the loop's encoder interface (``step_inputs`` /
    ``step``, as :class:`~fmkt_mm.flow.MetaEncoder`). ``t`` is a ``(B,)``
    tensor (float32 or wider); states of one position, ``(B, C)`` vectors and
    ``1 x 1`` maps, reach it as ``(B, C)`` vectors."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field

    def step_inputs(self, times: Sequence[float], context: Optional[Tensor], like: Tensor) -> list:
        dtype = torch.promote_types(like.dtype, torch.float32)  # never embed time in half precision
        return [(torch.full((like.shape[0],), t, device=like.device, dtype=dtype), context) for t in times]

    def forward(self, x: Tensor, t: Optional[Tensor] = None, context: Optional[Tensor] = None, *,
                conditioning: Optional[Tuple[Tensor, Optional[Tensor]]] = None) -> Tensor:
        """``field(x, t, context)``, or one step of the loop with one entry
        of :meth:`step_inputs` as ``conditioning``."""
        if conditioning is not None:
            return self.step(x, conditioning)
        return self.field(x, t, context)

    def step(self, x: Tensor, conditioning: Tuple[Tensor, Optional[Tensor]]) -> Tensor:
        t, context = conditioning
        if x.shape[2] == x.shape[3] == 1:
            return self.field(x.flatten(1), t, context)[:, :, None, None]
        return self.field(x, t, context)
