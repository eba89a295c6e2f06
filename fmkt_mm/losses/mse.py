"""Mean squared error between student and teacher outputs."""
import torch.nn.functional as F
from torch import Tensor

from fmkt_mm.registry import MODELS

from .base import Labels, MetricLoss, check_same_shape, check_same_shape_steps


@MODELS.register_module()
class MSELoss(MetricLoss):
    r"""Mean squared error, averaged over all elements.

    .. math::

        L = \frac{1}{N} \sum_k (s_k - t_k)^2

    Shapes:
        student, teacher: any shape, the same on both sides. ``labels`` is
        ignored.

    Args:
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Labels = None) -> Tensor:
        check_same_shape(student, teacher, 'MSELoss')
        return F.mse_loss(student, teacher)

    def compute_steps(self, steps: Tensor, teacher: Tensor,
                      labels: Labels = None) -> Tensor:
        check_same_shape_steps(steps, teacher, 'MSELoss')
        return (steps - teacher).pow(2).flatten(1).mean(1)  # a shared target broadcasts
