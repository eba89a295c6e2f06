"""Decoupled knowledge distillation (Zhao et al., CVPR 2022)."""
import torch
import torch.nn.functional as F
from torch import Tensor

from fmkt_mm.registry import MODELS

from .base import Labels, MetricLoss, check_same_shape_steps, per_step_targets


@MODELS.register_module()
class DKDLoss(MetricLoss):
    r"""KD split into a target-class and a non-target-class term.

    With :math:`p = \mathrm{softmax}(z / \tau)` and :math:`g` the
    ground-truth class of a sample:

    .. math::

        TCKD &= \mathrm{KL}\big([p^T_g, 1 - p^T_g] \,\|\,
                                [p^S_g, 1 - p^S_g]\big) \\
        NCKD &= \mathrm{KL}(\hat p^T \,\|\, \hat p^S), \quad
                \hat p = \mathrm{softmax}\big((z / \tau)_{c \neq g}\big) \\
        L &= w(t) \, \tau^2 \, \frac{1}{B} \sum_i
             (\alpha \, TCKD_i + \beta \, NCKD_i)

    :math:`\hat p` is computed over all C classes with 1000 subtracted from
    the ground-truth logit, which drives its probability to zero without
    reindexing. The warm-up factor is :math:`w(t) = \min(1, t / T_w)` when
    ``warmup_iters`` :math:`T_w > 0`, else 1; :math:`t` is the iteration last
    given to :meth:`set_iter`, 0 before any call, so with warm-up on the loss
    is zero until the training loop starts reporting iterations.

    Shapes:
        student, teacher: logits (B, C), C >= 2.
        labels: ground-truth class indices (B,), a tensor of any integer dtype
        or a sequence of ints. Required.

    Args:
        alpha (float): Weight of TCKD. Defaults to 1.0.
        beta (float): Weight of NCKD. Defaults to 8.0.
        tau (float): Softmax temperature. Defaults to 4.0.
        warmup_iters (int): Iterations of the linear warm-up of the loss;
            0 disables it. Defaults to 0.
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, tau: float = 4.0,
                 warmup_iters: int = 0, loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.tau = float(tau)
        self.warmup_iters = int(warmup_iters)
        self.iter = 0

    def set_iter(self, iteration: int) -> None:
        """Set the iteration that drives the warm-up factor."""
        self.iter = int(iteration)

    @property
    def warmup_factor(self) -> float:
        r""":math:`\min(1, t / T_w)`, or 1 without warm-up."""
        if self.warmup_iters <= 0:
            return 1.0
        return min(1.0, self.iter / self.warmup_iters)

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Labels = None) -> Tensor:
        return self.compute_steps(student[None], teacher, labels)[0]

    def compute_steps(self, steps: Tensor, teacher: Tensor,
                      labels: Labels = None) -> Tensor:
        check_same_shape_steps(steps, teacher, 'DKDLoss')
        if steps.dim() != 3 or steps.shape[2] < 2:
            raise ValueError(
                'DKDLoss expects logits of shape (B, C) with C >= 2, got '
                f'{tuple(steps.shape[1:])}')
        n, b, c = steps.shape
        labels = self._check_labels(labels, steps[0])
        teacher = teacher.reshape(n * b, c) if per_step_targets(steps, teacher) else teacher.repeat(n, 1)
        per_sample = self._per_sample(steps.reshape(n * b, c), teacher, labels.repeat(n))
        return self.warmup_factor * per_sample.view(n, b).mean(1)

    def _per_sample(self, student: Tensor, teacher: Tensor, labels: Tensor) -> Tensor:
        """``tau^2 (alpha TCKD_i + beta NCKD_i)`` of every sample, (B,)."""
        gt_mask = F.one_hot(labels, student.shape[1]).bool()
        log_p_s = F.log_softmax(student / self.tau, dim=1)
        log_p_t = F.log_softmax(teacher / self.tau, dim=1)

        # Binary (target, non-target) distributions in log space: the
        # non-target mass comes from a logsumexp rather than log(1 - p_g),
        # which would lose all precision once p_g rounds to 1.
        log_b_s = self._binary_log_probs(log_p_s, gt_mask)
        log_b_t = self._binary_log_probs(log_p_t, gt_mask)
        tckd = F.kl_div(log_b_s, log_b_t.exp(), reduction='none').sum(1)

        offset = 1000.0 * gt_mask.float()
        log_q_s = F.log_softmax(student / self.tau - offset, dim=1)
        q_t = F.softmax(teacher / self.tau - offset, dim=1)
        nckd = F.kl_div(log_q_s, q_t, reduction='none').sum(1)
        return self.tau**2 * (self.alpha * tckd + self.beta * nckd)

    @staticmethod
    def _binary_log_probs(log_p: Tensor, gt_mask: Tensor) -> Tensor:
        """(B, C) log-probabilities -> (B, 2) [log p_g, log(1 - p_g)]."""
        log_gt = log_p.masked_select(gt_mask).unsqueeze(1)
        log_other = log_p.masked_fill(gt_mask, float('-inf')).logsumexp(
            dim=1, keepdim=True)
        return torch.cat([log_gt, log_other], dim=1)

    @staticmethod
    def _check_labels(labels: Labels, logits: Tensor) -> Tensor:
        if labels is None:
            raise ValueError(
                'DKDLoss needs the ground-truth labels: call it as '
                'loss(student, teacher, labels) with the (B,) class indices '
                'of the batch.')
        labels = torch.as_tensor(labels, device=logits.device)
        if labels.is_floating_point() or labels.is_complex() \
                or labels.dtype == torch.bool:
            raise ValueError(
                'DKDLoss labels must be integer class indices, got dtype '
                f'{labels.dtype}')
        labels = labels.long().reshape(-1)
        if labels.numel() != logits.shape[0]:
            raise ValueError(
                f'DKDLoss: {labels.numel()} labels for a batch of '
                f'{logits.shape[0]} logits {tuple(logits.shape)}; pass one '
                'class index per sample.')
        return labels

    def extra_repr(self) -> str:
        return (f'alpha={self.alpha}, beta={self.beta}, tau={self.tau}, '
                f'warmup_iters={self.warmup_iters}, ' + super().extra_repr())
