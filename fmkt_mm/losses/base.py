"""Common interface of the distillation losses."""
from typing import Optional, Sequence, Union

import torch
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
        teacher = as_target(teacher).float()
        return scaled(self.compute(student, teacher, labels), self.loss_weight)

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Labels = None) -> Tensor:
        """Unweighted loss on float32 inputs (teacher already detached)."""
        raise NotImplementedError

    def forward_steps(self, steps: Tensor, teacher: Tensor,
                      labels: Labels = None, scale: float = 1.0) -> Tensor:
        """The loss of every step of a flow, in one call.

        ``steps`` stacks ``N`` student outputs, ``(N, B, ...)``; ``teacher``
        is one target for all steps, ``(B, ...)``, or one per step, ``(N, B,
        ...)``. The result is ``(N,)`` with entry ``k`` equal to
        ``self(steps[k], teacher or teacher[k], labels)``. Statistics taken
        over the batch (DIST's correlations, PKD's standardisation) are taken
        per step: steps never mix. ``scale`` multiplies the result (with
        ``loss_weight``, in one operator).
        """
        if teacher.dim() == steps.dim() and teacher.shape[0] != steps.shape[0]:
            raise ValueError(
                f'{type(self).__name__}.forward_steps: {steps.shape[0]} steps but {teacher.shape[0]} '
                f'per-step targets ({tuple(steps.shape)} vs {tuple(teacher.shape)})')
        if steps.dim() not in (teacher.dim(), teacher.dim() + 1):
            raise ValueError(
                f'{type(self).__name__}.forward_steps: steps {tuple(steps.shape)} must stack '
                f'N outputs shaped like the teacher {tuple(teacher.shape)}, (N, *teacher.shape)')
        steps = steps.float()
        teacher = as_target(teacher).float()
        return scaled(self.compute_steps(steps, teacher, labels), self.loss_weight * scale)

    def compute_steps(self, steps: Tensor, teacher: Tensor,
                      labels: Labels = None) -> Tensor:
        """Unweighted ``(N,)`` losses of stacked steps; subclasses override
        this with one batched computation, the default loops."""
        targets = teacher if per_step_targets(steps, teacher) else [teacher] * steps.shape[0]
        return torch.stack([self.compute(step, target, labels) for step, target in zip(steps, targets)])

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}'


def check_same_shape(student: Tensor, teacher: Tensor, loss_name: str) -> None:
    """Raise a ValueError naming both shapes when they differ."""
    _check_shapes(student.shape, teacher.shape, loss_name)


def _check_shapes(student: torch.Size, teacher: torch.Size, loss_name: str) -> None:
    if student != teacher:
        raise ValueError(
            f'{loss_name}: student {tuple(student)} vs teacher '
            f'{tuple(teacher)}: the loss compares the two outputs '
            'element-wise; configure an adapter so both sides have the same '
            'shape.')


def scaled(value: Tensor, factor: float) -> Tensor:
    """``factor * value``, without an operator when ``factor`` is 1."""
    return value if factor == 1.0 else value * factor


def as_target(tensor: Tensor) -> Tensor:
    """``tensor`` cut from the graph (a no-op, no operator, when it is not
    in one): the teacher side of a loss."""
    return tensor.detach() if tensor.requires_grad else tensor


def per_step_targets(steps: Tensor, teacher: Tensor) -> bool:
    """Whether ``teacher`` holds one target per step (``(N, B, ...)``) rather
    than one target shared by all steps (``(B, ...)``)."""
    return teacher.dim() == steps.dim()


def check_same_shape_steps(steps: Tensor, teacher: Tensor, loss_name: str) -> None:
    """:func:`check_same_shape` for stacked steps against a shared or a
    per-step target."""
    _check_shapes(steps.shape[1:], teacher.shape[1:] if per_step_targets(steps, teacher) else teacher.shape,
                  loss_name)


def classes_last_steps(steps: Tensor) -> Tensor:
    """Stacked logits ``(N, B, C, ...)`` -> ``(N, R, C)``, R being B times
    the positions (:func:`classes_last` per step)."""
    if steps.dim() < 3:
        raise ValueError(f'expected stacked logits of shape (N, B, C, ...), got {tuple(steps.shape)}')
    if steps.dim() == 3:
        return steps
    n, num_classes = steps.shape[0], steps.shape[2]
    return steps.movedim(2, -1).reshape(n, -1, num_classes)


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
