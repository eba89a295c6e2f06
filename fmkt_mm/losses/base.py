"""Common interface of the distillation losses."""
from typing import Optional, Sequence, Union

from torch import Tensor, nn

Labels = Optional[Union[Tensor, Sequence[int]]]


class MetricLoss(nn.Module):
    """Base class of the losses between a student and a teacher output.

    Subclasses implement :meth:`compute`; :meth:`forward` prepares the inputs
    and applies ``loss_weight``. The teacher is a target: it is detached, so
    the gradient reaches the student only. Both sides are cast to float32,
    because softmax, KL and standardisation are unsafe in bf16/fp16 when the
    model trains under autocast.

    Args:
        loss_weight (float): Multiplier of the loss value. Defaults to 1.0.
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)

    def set_iter(self, iteration: int) -> None:
        """Receive the current training iteration; no-op by default."""

    def forward(self, student: Tensor, teacher: Tensor,
                labels: Labels = None) -> Tensor:
        """Return ``loss_weight * loss(student, teacher)``, a float32 scalar.

        Args:
            student (Tensor): Student output, e.g. logits (B, C) or a
                feature map (B, C, H, W).
            teacher (Tensor): Teacher output of the matching shape.
            labels (Tensor | Sequence[int], optional): Ground-truth class
                indices (B,), for the losses that use them.
        """
        student = student.float()
        teacher = teacher.detach().float()
        return self.loss_weight * self.compute(student, teacher, labels)

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Labels = None) -> Tensor:
        """Unweighted loss on float32 inputs (teacher already detached)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}'


def check_same_shape(student: Tensor, teacher: Tensor, loss_name: str) -> None:
    """Raise a ValueError naming both shapes when they differ."""
    if student.shape != teacher.shape:
        raise ValueError(
            f'{loss_name}: student {tuple(student.shape)} vs teacher '
            f'{tuple(teacher.shape)}: the loss compares the two outputs '
            'element-wise; configure an adapter so both sides have the same '
            'shape.')


def classes_last(logits: Tensor) -> Tensor:
    """Flatten (B, C, ...) logits to (N, C), N being B times the positions.

    Dim 1 holds the classes; every other position becomes a sample.
    """
    if logits.dim() < 2:
        raise ValueError(
            f'expected logits of shape (B, C, ...), got {tuple(logits.shape)}')
    if logits.dim() == 2:
        return logits
    num_classes = logits.shape[1]
    return logits.movedim(1, -1).reshape(-1, num_classes)
