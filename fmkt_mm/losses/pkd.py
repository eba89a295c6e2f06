"""PKD: feature distillation with Pearson correlation (Cao et al., 2022)."""
import functools
from typing import TYPE_CHECKING, Any, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from fmkt_mm.registry import MODELS

from .base import Labels, MetricLoss, as_target, check_same_shape_steps, per_step_targets

if TYPE_CHECKING:
    from ..flow.reduction import FactoredSteps


def biased_standardize(feat: Tensor, eps: float) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` per channel (dim 1) with the biased
    variance: batch norm in training mode without running statistics, one
    operator forward and one backward. Times ``sqrt((n - 1) / n)`` (``n``
    values per channel) it is the standardisation with the unbiased
    variance and ``eps * n / (n - 1)``."""
    return F.batch_norm(feat, None, None, training=True, eps=eps)


#: the standardisation's eps: ``EPS**2`` is added to each channel's unbiased variance
EPS = 1e-6


class StandardisedMeanSquare(torch.autograd.Function):
    """``(N,)``: the mean square between each step of ``steps`` ``(N, B, C,
    ...)``, standardised per step and channel over the batch and positions
    (biased variance plus ``eps``), and the standardised ``target`` ``(B, C,
    ...)``.

    Backward keeps the steps themselves (one copy of them), their per-channel
    moments and the target, and recomputes the standardised steps from them
    (batch norm's backward formula), where autograd through standardising
    and subtracting would keep two copies of the steps. Values and gradients
    equal the direct form to rounding (tests)."""

    @staticmethod
    def forward(ctx: Any, steps: Tensor, target: Tensor, eps: float) -> Tensor:
        dims = (1, *range(3, steps.dim()))  # batch and positions, per step and channel
        var, mean = torch.var_mean(steps, dim=dims, correction=0, keepdim=True)
        inv_std = torch.rsqrt(var + eps)
        ctx.save_for_backward(steps, target, mean, inv_std)
        ctx.dims = dims
        diff = (steps - mean).mul_(inv_std).sub_(target)
        return diff.square_().mean((*dims, 2))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tuple[Tensor, None, None]:
        steps, target, mean, inv_std = ctx.saved_tensors
        dims = ctx.dims
        standardised = (steps - mean).mul_(inv_std)
        diff = standardised - target
        # d loss / d standardised = G = scale * diff; batch norm's backward:
        # inv_std * (G - mean(G) - standardised * mean(G * standardised)), per step and channel
        scale = (grad * (2.0 / steps[0].numel())).view(-1, *([1] * (steps.dim() - 1)))
        diff_mean = diff.mean(dims, keepdim=True)
        correlation = (diff * standardised).mean(dims, keepdim=True)
        out = diff.sub_(diff_mean).sub_(standardised.mul_(correlation))
        return out.mul_(inv_std * scale), None, None


@functools.lru_cache(maxsize=16)
def segment_maps(counts: Tuple[int, ...], batch: int, device: torch.device,
                 dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """``(average, spread)`` of positions in segments of ``counts``:
    ``v.sum(0) @ average`` (``average`` ``(P, L)``) is each segment's mean
    over a batch of ``batch`` and its positions, ``m @ spread`` (``spread``
    ``(L, P)``, zeros and ones) puts each segment's value at its positions.
    Cached per segmentation (an FPN's level sizes repeat from batch to batch)."""
    with torch.inference_mode(False), torch.no_grad():
        lengths = torch.tensor(counts, device=device)
        index = torch.repeat_interleave(torch.arange(len(counts), device=device), lengths)
        spread = F.one_hot(index, len(counts)).t().to(dtype).contiguous()
        average = (spread / (lengths.to(dtype) * batch)[:, None]).t().contiguous()
    return average, spread


def _segment_standardise(v: Tensor, average: Tensor, spread: Tensor, eps: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``v`` ``(B, C, P)`` standardised per channel and segment over the
    batch and the segment's positions (biased variance plus the segment's
    ``eps``); with the means and inverse deviations, ``(C, L)``."""
    mean = v.sum(0) @ average
    centred = v - mean @ spread
    inv_std = (centred.square().sum(0) @ average).add_(eps).rsqrt_()
    return centred.mul_(inv_std @ spread), mean, inv_std


class SegmentStandardisedMeanSquare(torch.autograd.Function):
    """:class:`StandardisedMeanSquare` of several maps of different sizes at
    once: ``x`` and ``target`` ``(B, C, P)`` hold the segments' positions
    side by side (``average`` / ``spread``: :func:`segment_maps`); each
    segment is standardised per channel on its own (biased variance plus its
    ``eps``, ``(L,)``) and ``(L,)`` is returned: each segment's sum of
    squared differences over the batch, channels and its positions, times
    ``average``'s ``1 / (B P_l)`` and the segment's ``factor``. Backward
    keeps ``x``, the standardised target and the per-segment moments and
    recomputes the rest (batch norm's backward per segment)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, target: Tensor, average: Tensor, spread: Tensor, eps: Tensor,
                factor: Tensor) -> Tensor:
        standardised, mean, inv_std = _segment_standardise(x, average, spread, eps)
        target = _segment_standardise(target, average, spread, eps)[0]
        ctx.save_for_backward(x, target, mean, inv_std, average, spread, factor)
        per_position = standardised.sub_(target).square_().sum((0, 1))
        return (per_position @ average).mul_(factor)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tuple[Tensor, None, None, None, None, None]:
        x, target, mean, inv_std, average, spread, factor = ctx.saved_tensors
        standardised = (x - mean @ spread).mul_(inv_std @ spread)
        # d loss / d standardised = G = 2 factor_l grad_l / (B P_l) * diff; batch norm's backward
        # per channel and segment: inv_std * (G - mean(G) - standardised * mean(G * standardised))
        weight = average @ (grad * factor).mul_(2.0)  # (P,)
        g = (standardised - target).mul_(weight)
        g_mean = (g.sum(0) @ average) @ spread
        correlation = ((g * standardised).sum(0) @ average) @ spread
        out = g.sub_(g_mean).sub_(standardised.mul_(correlation))
        return out.mul_(inv_std @ spread), None, None, None, None, None


def factored_standardised_mean_square(x: Tensor, moved: Tensor, up: Tensor, target: Tensor, eps: float) -> Tensor:
    """``(N,)``: :class:`StandardisedMeanSquare` of the steps ``x + up
    moved_k`` against the standardised ``target``, from the factors: ``x``
    ``(B, C, P)``, ``moved`` ``(N, B, r, P)``, ``up`` ``(C, r)``, ``target``
    ``(B, C, P)``. Per step and channel, with ``s = x + up moved_k`` and
    ``t`` the target, both centred per channel: ``var(s) = E[x^2] + 2 up
    E[x moved_k] + up E[moved_k moved_k^T] up^T``, ``E[s t] = E[x t] + up
    E[moved_k t]``, and the mean square of the standardised difference is
    ``var(s) / (var(s) + eps) - 2 E[s t] / sqrt(var(s) + eps) + E[t^2]``.
    Every full-size tensor is ``(B, C, P)`` or one ``N r``-channel map,
    never ``N`` of them: the moments are matrix products over the positions."""
    n, b, r, p = moved.shape
    values = b * p  # per channel
    x = x - x.mean((0, 2), keepdim=True)
    moved = moved - moved.mean((1, 3), keepdim=True)
    tokens = moved.permute(1, 3, 0, 2).reshape(b, p, n * r)  # every step's movement side by side
    x_moved = torch.bmm(x, tokens).sum(0).view(-1, n, r)  # (C, N, r)
    t_moved = torch.bmm(target, tokens).sum(0).view(-1, n, r)
    gram = torch.bmm(tokens.transpose(1, 2), tokens).sum(0).view(n, r, n, r)
    gram = gram.diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (N, r, r): each step's own
    up_gram_up = (torch.matmul(up, gram) * up).sum(-1).t()  # (C, N)
    var = (x.square().sum((0, 2))[:, None] + 2 * (x_moved * up[:, None]).sum(-1) + up_gram_up) / values
    cross = ((x * target).sum((0, 2))[:, None] + (t_moved * up[:, None]).sum(-1)) / values
    inv_std = (var.clamp(min=0) + eps).rsqrt()
    per_channel = var * inv_std.square() - 2 * inv_std * cross + (target.square().sum((0, 2)) / values)[:, None]
    return per_channel.mean(0)


@MODELS.register_module()
class PKDLoss(MetricLoss):
    r"""MSE between per-channel standardised feature maps.

    Each map is standardised per channel over (N, H, W) (mean 0, unbiased
    variance 1, ``eps**2 = 1e-12`` added to the variance), then

    .. math::

        L = \frac{1}{2} \cdot \frac{1}{N C H W}
            \sum (\hat F^S - \hat F^T)^2

    Up to the factor :math:`(n - 1) / n` (n values per channel) and the eps,
    this is :math:`1 - r` averaged over channels, :math:`r` being the Pearson
    correlation of student and teacher: the student matches the teacher's
    pattern, not its magnitude.

    Shapes:
        student, teacher: (B, C, H, W) feature maps, or (B, C) vectors
        (standardised per channel over the batch). The channel counts must
        match. When H, W differ, the student is resized bilinearly
        (``align_corners=False``) to the teacher's size if ``resize_student``,
        else the teacher to the student's. ``labels`` is ignored.

    Args:
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
        resize_student (bool): Which side to resize on a spatial mismatch.
            Defaults to True.
    """

    def __init__(self, loss_weight: float = 1.0,
                 resize_student: bool = True) -> None:
        super().__init__(loss_weight)
        self.resize_student = resize_student

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Labels = None) -> Tensor:
        return self.compute_steps(student[None], teacher, labels)[0]

    def compute_steps(self, steps: Tensor, teacher: Tensor,
                      labels: Labels = None) -> Tensor:
        n, b = steps.shape[:2]
        if per_step_targets(steps, teacher):
            return super().compute_steps(steps, teacher, labels)
        spatial_mismatch = (
            steps.dim() == 5 and teacher.dim() == 4
            and steps.shape[1:3] == teacher.shape[:2]
            and steps.shape[3:] != teacher.shape[2:])
        if spatial_mismatch:
            if self.resize_student:
                steps = F.interpolate(steps.flatten(0, 1), size=teacher.shape[2:], mode='bilinear',
                                      align_corners=False).unflatten(0, (n, b))
            else:
                teacher = F.interpolate(teacher, size=steps.shape[3:],
                                        mode='bilinear', align_corners=False)
        check_same_shape_steps(steps, teacher, 'PKDLoss')
        if teacher.dim() < 2:
            raise ValueError('PKDLoss expects (B, C, H, W) or (B, C) inputs, '
                             f'got {tuple(teacher.shape)}')
        count = teacher.numel() // teacher.shape[1]  # values per channel
        if count == 1:  # every channel standardises to 0
            return (steps - steps).flatten(1).sum(1)
        # standardised with the biased variance, the unbiased factor (n-1)/n
        # applied once to the mean square
        c2 = (count - 1) / count
        eps = c2 * EPS**2
        return StandardisedMeanSquare.apply(steps, biased_standardize(teacher, eps), eps) * (c2 / 2)

    def forward_factored_steps(self, factored: 'FactoredSteps', teacher: Tensor, labels: Labels = None,
                               scale: float = 1.0) -> Tensor:
        """:meth:`forward_steps` of a reduced flow's steps given as their
        factors (:class:`~fmkt_mm.flow.reduction.FactoredSteps`), without
        forming the ``N`` full-width estimates
        (:func:`factored_standardised_mean_square`): equal to
        ``forward_steps(factored.materialise(), teacher, scale=scale)`` to
        rounding (tests). A teacher of another size, or of one value per
        channel, takes the formed steps."""
        if factored.shape[1:] != teacher.shape or teacher.dim() < 3 or teacher.numel() == teacher.shape[1]:
            return self.forward_steps(factored.materialise(), teacher, labels, scale)
        teacher = as_target(teacher).float()
        count = teacher.numel() // teacher.shape[1]  # values per channel
        c2 = (count - 1) / count
        eps = c2 * EPS**2
        with torch.autocast(teacher.device.type, enabled=False):  # moments in float32, not autocast's half
            steps = factored_standardised_mean_square(
                factored.base.float().flatten(2), factored.moved.float().flatten(3), factored.up_weight.float(),
                biased_standardize(teacher, eps).flatten(2), eps)
        return steps * (c2 / 2 * self.loss_weight * scale)

    def forward_levels(self, student: Tensor, teacher: Tensor, counts: Sequence[int],
                       scale: Sequence[float]) -> Tensor:
        """The loss of several levels at once, ``(L,)``: ``student`` and
        ``teacher`` ``(B, C, P)`` hold the positions of ``L`` levels side by
        side (``counts`` of them each, in order); entry ``l`` equals
        ``scale[l] * self(student level l, teacher level l)`` to rounding,
        in a fixed number of operators whatever ``L`` (tests)."""
        if student.shape != teacher.shape or student.dim() != 3 or sum(counts) != student.shape[2]:
            raise ValueError(f'PKDLoss.forward_levels: student {tuple(student.shape)} and teacher '
                             f'{tuple(teacher.shape)} must both be (B, C, P) with P = sum(counts) = {sum(counts)}')
        student, teacher = student.float(), as_target(teacher).float()
        b, c = student.shape[:2]
        average, spread = segment_maps(tuple(int(n) for n in counts), b, student.device, student.dtype)
        values = [b * n for n in counts]  # per channel and level
        c2 = [(n - 1) / n for n in values]
        # a level of one value per channel standardises to 0 (its factor is 0; eps 1 keeps it finite)
        constants = torch.tensor([[c2_l * EPS**2 if c2_l else 1.0 for c2_l in c2],
                                  [w * self.loss_weight * c2_l / (2 * c) for w, c2_l in zip(scale, c2)]],
                                 device=student.device, dtype=student.dtype)
        eps, factor = constants
        with torch.autocast(student.device.type, enabled=False):  # moments in float32, not autocast's half
            return SegmentStandardisedMeanSquare.apply(student, teacher, average, spread, eps, factor)

    def extra_repr(self) -> str:
        return (f'resize_student={self.resize_student}, '
                + super().extra_repr())
