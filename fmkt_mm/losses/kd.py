"""Vanilla knowledge distillation (Hinton et al., 2015)."""
import torch.nn.functional as F
from torch import Tensor

from fmkt_mm.registry import MODELS

from .base import (
    Labels,
    MetricLoss,
    check_same_shape,
    check_same_shape_steps,
    classes_last,
    classes_last_steps,
    per_step_targets,
)


@MODELS.register_module()
class KDLoss(MetricLoss):
    r"""KL divergence between temperature-softened class distributions.

    .. math::

        L = \tau^2 \, \frac{1}{B} \sum_i \sum_c p^T_{ic}
            \log \frac{p^T_{ic}}{p^S_{ic}},
        \qquad p = \mathrm{softmax}(z / \tau)

    The :math:`\tau^2` factor keeps the gradient magnitude independent of the
    temperature.

    Shapes:
        student, teacher: logits (B, C), or (B, C, ...) with classes in dim 1;
        every other position then counts as a sample and the loss is averaged
        over the batch and the positions. ``labels`` is ignored.

    Args:
        tau (float): Softmax temperature. Defaults to 1.0.
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight)
        self.tau = float(tau)

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Labels = None) -> Tensor:
        check_same_shape(student, teacher, 'KDLoss')
        log_p_s = F.log_softmax(classes_last(student) / self.tau, dim=1)
        log_p_t = F.log_softmax(classes_last(teacher) / self.tau, dim=1)
        kl = F.kl_div(log_p_s, log_p_t, reduction='batchmean', log_target=True)
        return self.tau**2 * kl

    def compute_steps(self, steps: Tensor, teacher: Tensor,
                      labels: Labels = None) -> Tensor:
        check_same_shape_steps(steps, teacher, 'KDLoss')
        log_p_s = F.log_softmax(classes_last_steps(steps) / self.tau, dim=2)  # (N, R, C)
        flat = classes_last_steps if per_step_targets(steps, teacher) else classes_last
        log_p_t = F.log_softmax(flat(teacher) / self.tau, dim=-1)  # (R, C) shared, or (N, R, C)
        kl = F.kl_div(log_p_s, log_p_t.expand_as(log_p_s), reduction='none', log_target=True)
        return kl.sum((1, 2)) * (self.tau**2 / log_p_s.shape[1])

    def extra_repr(self) -> str:
        return f'tau={self.tau}, ' + super().extra_repr()


@MODELS.register_module()
class PixelKDLoss(KDLoss):
    r"""Pixel-wise KD for dense prediction: :class:`KDLoss` on logit maps
    (B, C, H, W), every pixel a sample (the class distributions of each
    pixel matched, averaged over the batch and the pixels). The same
    computation as ``KDLoss``; the name says how a segmentation config uses it.
    """
