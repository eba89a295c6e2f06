"""What the flow tests share: one training run's step losses by name."""
from typing import Dict, Optional, Tuple

from torch import Tensor

from fmkt_mm.flow import FlowOutput, FlowTransfer


def step_losses(flow: FlowTransfer, x: Tensor, target: Optional[Tensor] = None,
                num_steps: Optional[int] = None, labels: Optional[Tensor] = None,
                prefix: str = 'loss_flow') -> Tuple[Dict[str, Tensor], FlowOutput]:
    """``({f'{prefix}_step{k}': D(step_k, target) / N}, run)`` of one run of
    ``flow`` on ``x`` (``N`` drawn as in training unless given)."""
    n = num_steps if num_steps is not None else flow.draw_num_steps()
    out = flow.run(x, n, labels=labels)
    values = flow.step_losses(out, target, labels)
    return {f'{prefix}_step{k}': v for k, v in enumerate(values.unbind(0), start=1)}, out
