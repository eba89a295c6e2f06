"""Channel-wise distillation (Shu et al., ICCV 2021), for dense prediction."""
import torch.nn.functional as F
from torch import Tensor

from fmkt_mm.registry import MODELS

from .base import Labels, MetricLoss, check_same_shape, check_same_shape_steps, per_step_targets


@MODELS.register_module()
class CWDLoss(MetricLoss):
    r"""KL divergence between each channel's distribution over positions.

    Every channel of every sample becomes a distribution over the spatial
    positions, softened by the temperature; the teacher's is the target:

    .. math::

        L = \frac{\tau^2}{B C} \sum_{b, c} \sum_{i} p^T_{bci}
            \log \frac{p^T_{bci}}{p^S_{bci}},
        \qquad p_{bc\cdot} = \mathrm{softmax}_i(z_{bci} / \tau)

    where :math:`i` runs over the :math:`H W` positions. On segmentation
    logits (the paper's main use) each class channel's activation map is
    matched where it is large; on feature maps each feature channel's.

    Shapes:
        student, teacher: (B, C, H, W) (or any (B, C, ...): the trailing
        dimensions are the positions). ``labels`` is ignored.

    Args:
        tau (float): Softmax temperature. Defaults to 1.0 (the paper uses 1
            on logits; 4 is common on features).
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight)
        self.tau = float(tau)

    def compute(self, student: Tensor, teacher: Tensor, labels: Labels = None) -> Tensor:
        check_same_shape(student, teacher, 'CWDLoss')
        if student.dim() < 3:
            raise ValueError(f'CWDLoss: expected maps (B, C, H, W), got {tuple(student.shape)}')
        rows = student.shape[0] * student.shape[1]
        log_p_s = F.log_softmax(student.reshape(rows, -1) / self.tau, dim=1)
        log_p_t = F.log_softmax(teacher.reshape(rows, -1) / self.tau, dim=1)
        kl = F.kl_div(log_p_s, log_p_t, reduction='sum', log_target=True)
        return kl * (self.tau**2 / rows)

    def compute_steps(self, steps: Tensor, teacher: Tensor, labels: Labels = None) -> Tensor:
        check_same_shape_steps(steps, teacher, 'CWDLoss')
        if steps.dim() < 4:
            raise ValueError(f'CWDLoss: expected stacked maps (N, B, C, H, W), got {tuple(steps.shape)}')
        n, rows = steps.shape[0], steps.shape[1] * steps.shape[2]
        log_p_s = F.log_softmax(steps.reshape(n, rows, -1) / self.tau, dim=2)
        shape = (n, rows, -1) if per_step_targets(steps, teacher) else (rows, -1)
        log_p_t = F.log_softmax(teacher.reshape(shape) / self.tau, dim=-1)
        kl = F.kl_div(log_p_s, log_p_t.expand_as(log_p_s), reduction='none', log_target=True)
        return kl.sum((1, 2)) * (self.tau**2 / rows)

    def extra_repr(self) -> str:
        return f'tau={self.tau}, ' + super().extra_repr()
