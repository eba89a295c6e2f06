"""DIST: knowledge distillation from a stronger teacher (Huang et al., 2022)."""
import torch
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


def standardize(x: Tensor, eps: float = 1e-8) -> Tensor:
    """``(x - mean) / sqrt(var + eps**2 / D)`` along the last dim (``D``
    entries; biased variance): one layer-norm operator forward and one
    backward. The mean product of two standardised vectors is their Pearson
    correlation, ``sum(a_c b_c) / sqrt((|a_c|^2 + eps^2)(|b_c|^2 + eps^2))``
    with ``a_c``, ``b_c`` the centred vectors."""
    return F.layer_norm(x, x.shape[-1:], eps=eps * eps / x.shape[-1])


@MODELS.register_module()
class DISTLoss(MetricLoss):
    r"""Match the relations, not the values, of the class probabilities.

    With :math:`Y = \mathrm{softmax}(Z / \tau)` row-wise, (B, C):

    .. math::

        L_{inter} &= 1 - \frac{1}{B} \sum_i \rho(Y^S_{i,:}, Y^T_{i,:}) \\
        L_{intra} &= 1 - \frac{1}{C} \sum_j \rho(Y^S_{:,j}, Y^T_{:,j}) \\
        L &= \tau^2 (\beta L_{inter} + \gamma L_{intra})

    :math:`\rho` is the Pearson correlation, the mean product of the two
    standardised vectors (:func:`standardize`), with ``eps^2 = 1e-16`` added
    to each centred vector's squared norm. Being invariant to shift and
    scale, it tolerates a teacher much more confident than the student,
    which KL does not.

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
        probabilities ``(..., R, C)``; the leading dims (steps) stay apart.

        Both means are means over all ``R * C`` entries of products of
        standardised probabilities (rows for ``inter``, columns for
        ``intra``), so each term is one product and one sum; the weights
        go on the teacher's side, which needs no gradient."""
        scale = self.tau**2
        entries = y_s.shape[-1] * y_s.shape[-2]
        dims = (-2, -1)
        with torch.no_grad():
            t_inter = standardize(y_t).mul_(scale * self.beta / entries)
            t_intra = standardize(y_t.transpose(-1, -2)).mul_(scale * self.gamma / entries)
        inter = (standardize(y_s) * t_inter).sum(dims)
        intra = (standardize(y_s.transpose(-1, -2)) * t_intra).sum(dims)
        return torch.rsub(inter, scale * (self.beta + self.gamma)) - intra

    def extra_repr(self) -> str:
        return (f'beta={self.beta}, gamma={self.gamma}, tau={self.tau}, '
                + super().extra_repr())
