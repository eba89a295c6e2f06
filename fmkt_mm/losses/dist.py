"""DIST: knowledge distillation from a stronger teacher (Huang et al., 2022)."""
import torch
from torch import Tensor

from fmkt_mm.registry import MODELS
from .base import (Labels, MetricLoss, check_same_shape, check_same_shape_steps, classes_last,
                   classes_last_steps, per_step_targets)


def pearson(a: Tensor, b: Tensor, eps: float = 1e-8, dim: int = 1) -> Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim`` (the other dims
    broadcast): (N, D) -> (N,) for the rows with the default ``dim=1``."""
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    return (a * b).sum(dim=dim) / (a.norm(dim=dim) * b.norm(dim=dim) + eps)


@MODELS.register_module()
class DISTLoss(MetricLoss):
    r"""Match the relations, not the values, of the class probabilities.

    With :math:`Y = \mathrm{softmax}(Z / \tau)` row-wise, (B, C):

    .. math::

        L_{inter} &= 1 - \frac{1}{B} \sum_i \rho(Y^S_{i,:}, Y^T_{i,:}) \\
        L_{intra} &= 1 - \frac{1}{C} \sum_j \rho(Y^S_{:,j}, Y^T_{:,j}) \\
        L &= \tau^2 (\beta L_{inter} + \gamma L_{intra})

    :math:`\rho` is the Pearson correlation, with ``eps = 1e-8`` added to the
    product of the norms. Being invariant to shift and scale, it tolerates a
    teacher much more confident than the student, which KL does not.

    Shapes:
        student, teacher: logits (B, C), or (B, C, ...) with classes in dim 1
        (every other position then counts as a sample). ``labels`` is
        ignored. The intra-class term needs B > 1 to be informative.

    Args:
        beta (float): Weight of the inter-class term. Defaults to 2.0.
        gamma (float): Weight of the intra-class term. Defaults to 2.0.
        tau (float): Softmax temperature. Defaults to 1.0.
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, beta: float = 2.0, gamma: float = 2.0, tau: float = 1.0,
                 loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight)
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.tau = float(tau)

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Labels = None) -> Tensor:
        check_same_shape(student, teacher, 'DISTLoss')
        return self._relations(self._probs(classes_last(student)), self._probs(classes_last(teacher)))

    def compute_steps(self, steps: Tensor, teacher: Tensor,
                      labels: Labels = None) -> Tensor:
        check_same_shape_steps(steps, teacher, 'DISTLoss')
        # (N, R, C) against an (R, C) shared by all steps or (N, R, C); each step its own batch
        flat = classes_last_steps if per_step_targets(steps, teacher) else classes_last
        return self._relations(self._probs(classes_last_steps(steps)), self._probs(flat(teacher)))

    def _probs(self, logits: Tensor) -> Tensor:
        return (logits if self.tau == 1.0 else logits / self.tau).softmax(dim=-1)

    def _relations(self, y_s: Tensor, y_t: Tensor) -> Tensor:
        """``tau^2 (beta (1 - mean inter) + gamma (1 - mean intra))`` for
        probabilities ``(..., R, C)``; the leading dims (steps) stay apart."""
        inter = pearson(y_s, y_t, dim=-1).mean(-1)  # over the classes of each sample
        intra = pearson(y_s, y_t, dim=-2).mean(-1)  # over the samples, per class
        scale = self.tau**2
        loss = torch.rsub(inter, scale * (self.beta + self.gamma), alpha=scale * self.beta)
        return torch.add(loss, intra, alpha=-scale * self.gamma)

    def extra_repr(self) -> str:
        return (f'beta={self.beta}, gamma={self.gamma}, tau={self.tau}, '
                + super().extra_repr())
