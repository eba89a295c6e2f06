"""PKD: feature distillation with Pearson correlation (Cao et al., 2022)."""
import torch
import torch.nn.functional as F
from torch import Tensor

from fmkt_mm.registry import MODELS
from .base import Labels, MetricLoss, check_same_shape_steps, per_step_targets


def standardize(feat: Tensor, eps: float = 1e-6) -> Tensor:
    """Standardise each channel (dim 1) over all other dims.

    ``(x - mean) / (std + eps)``, with the unbiased std of MMRazor's
    implementation; a channel with a single value maps to 0.
    """
    channels_first = feat.transpose(0, 1).reshape(feat.shape[1], -1)
    mean = channels_first.mean(dim=1, keepdim=True)
    # Unbiased std is NaN on one value; the population std (0) is not.
    correction = 1 if channels_first.shape[1] > 1 else 0
    std = channels_first.std(dim=1, keepdim=True, correction=correction)
    normed = (channels_first - mean) / (std + eps)
    moved_shape = (feat.shape[1], feat.shape[0]) + tuple(feat.shape[2:])
    return normed.reshape(moved_shape).transpose(0, 1)


def standardize_steps(steps: Tensor, eps: float = 1e-6) -> Tensor:
    """:func:`standardize` of every step of ``(N, B, C, ...)``: each (step,
    channel) over the batch and positions of that step."""
    dims = (1, ) + tuple(range(3, steps.dim()))
    count = steps[0].numel() // steps.shape[2]
    std, mean = torch.std_mean(steps, dim=dims, correction=1 if count > 1 else 0, keepdim=True)
    return (steps - mean) / (std + eps)


@MODELS.register_module()
class PKDLoss(MetricLoss):
    r"""MSE between per-channel standardised feature maps.

    Each map is standardised per channel over (N, H, W) (mean 0, unbiased
    std 1, ``eps = 1e-6`` added to the std), then

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
        diff = standardize_steps(steps) - standardize(teacher)
        return diff.pow(2).flatten(1).mean(1) / 2

    def extra_repr(self) -> str:
        return (f'resize_student={self.resize_student}, '
                + super().extra_repr())
