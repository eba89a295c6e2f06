"""MGD: masked generative distillation (Yang et al., ECCV 2022)."""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from fmkt_mm.registry import MODELS

from .base import Labels, MetricLoss, per_step_targets


@MODELS.register_module()
class MGDLoss(MetricLoss):
    r"""Generate the teacher's feature map from a randomly masked student map.

    The student map :math:`S` (B, C_s, H, W) is mapped to the teacher's
    width by a 1x1 conv (``align``, only when ``student_channels !=
    teacher_channels``), a random spatial mask :math:`M` (B, 1, H, W) drops
    about ``lambda_mgd`` of its positions, and a generation block
    :math:`G` (3x3 conv, ReLU, 3x3 conv, C_t -> C_t) must rebuild the
    teacher's map :math:`T` (B, C_t, H, W) from what is left:

    .. math::

        L = \frac{\alpha_{mgd}}{B} \sum_{b, c, h, w}
            \big(G(f_{align}(S) \cdot M)_{bchw} - T_{bchw}\big)^2,
        \qquad M_{b1hw} = \begin{cases} 0 & u_{bhw} > 1 - \lambda_{mgd} \\
                                        1 & \text{otherwise} \end{cases}

    with :math:`u` uniform on [0, 1): a squared error summed over channels
    and positions, averaged over the batch. This is the authors' code
    (``FeatureLoss`` in ``det/mmdet/distillation/losses/mgd.py`` of
    github.com/yzd-v/MGD: ``nn.MSELoss(reduction='sum')`` divided by the
    batch size, times ``alpha_mgd``; the mask ``torch.where(rand > 1 -
    lambda_mgd, 0, 1)``). MMRazor splits the same computation in two: the
    align conv, the mask and the generation block are a connector on the
    student side (``MGDConncetor``, sic, in
    ``mmrazor/models/architectures/connectors/mgd_connector.py``) and its
    ``MGDLoss`` is the ``alpha_mgd``-weighted summed MSE alone. Here one
    module holds both, so that a config needs one entry, and the result is
    further multiplied by ``loss_weight``.

    The loss is learnable: ``align`` and ``generation`` are trained with the
    student (they sit in the distiller, so the optimizer updates them and
    checkpoints hold them) and are dropped at deployment. Their widths depend
    on the distilled level; :class:`~fmkt_mm.distill.FeatureDistiller` builds
    one MGD module per level and fills ``student_channels`` and
    ``teacher_channels`` itself.

    The mask is drawn from torch's global generator of the feature's device
    (``torch.rand``), so runs seeded through MMEngine repeat exactly. The
    summed (not averaged) error grows with the map size: ``alpha_mgd=2e-5``
    is the authors' value for 256-channel COCO FPN levels.

    Stacked steps (:meth:`forward_steps`, as a flow's metric loss): every
    step gets its own mask, drawn in one call, and the generation block runs
    once on all steps stacked along the batch. On CPU the draw equals ``N``
    successive per-step draws, so the stacked losses equal the per-step
    ones under the same seed.

    Shapes:
        student: (B, C_s, H, W) with ``C_s == student_channels``; teacher:
        (B, C_t, H, W) with ``C_t == teacher_channels``. Batch and spatial
        sizes must agree (resize with an adapter otherwise). ``labels`` is
        ignored.

    Args:
        student_channels (int): Channels of the student's map.
        teacher_channels (int): Channels of the teacher's map.
        alpha_mgd (float): Weight of the summed squared error. Defaults to
            2e-5 (the authors' detection configs).
        lambda_mgd (float): Masked fraction of the positions, in [0, 1].
            Defaults to 0.65 (detection; the authors use 0.5 for
            classification).
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, student_channels: int, teacher_channels: int, alpha_mgd: float = 2e-5,
                 lambda_mgd: float = 0.65, loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight)
        for name, value in (('student_channels', student_channels), ('teacher_channels', teacher_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'MGDLoss: {name} must be a positive int, got {value!r}')
        if not 0.0 <= float(lambda_mgd) <= 1.0:
            raise ValueError(f'MGDLoss: lambda_mgd is the masked fraction of the positions and must '
                             f'lie in [0, 1], got {lambda_mgd}')
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.alpha_mgd = float(alpha_mgd)
        self.lambda_mgd = float(lambda_mgd)
        self.align: Optional[nn.Conv2d] = (
            nn.Conv2d(student_channels, teacher_channels, kernel_size=1, stride=1, padding=0)
            if student_channels != teacher_channels else None)
        self.generation = nn.Sequential(
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1))

    def random_mask(self, shape: Tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
        """A mask of ``shape`` (``(B, 1, H, W)``): 0 where a uniform draw
        from torch's global generator exceeds ``1 - lambda_mgd``, else 1."""
        draw = torch.rand(shape, device=device)
        return (draw <= 1.0 - self.lambda_mgd).to(dtype)

    def generate(self, student: Tensor, mask: Tensor) -> Tensor:
        """``G(align(student) * mask)``: the generated teacher map, (B, C_t, H, W)."""
        aligned = self.align(student) if self.align is not None else student
        return self.generation(aligned * mask)

    def compute(self, student: Tensor, teacher: Tensor, labels: Labels = None) -> Tensor:
        return self.compute_steps(student[None], teacher, labels)[0]

    def compute_steps(self, steps: Tensor, teacher: Tensor, labels: Labels = None) -> Tensor:
        self._check_shapes(steps, teacher)
        n, b, _, h, w = steps.shape
        student = steps.flatten(0, 1)
        mask = self.random_mask((n * b, 1, h, w), student.device, student.dtype)
        generated = self.generate(student, mask).unflatten(0, (n, b))
        # a shared (B, C, H, W) target broadcasts over the steps
        return (generated - teacher).pow(2).sum((1, 2, 3, 4)) * (self.alpha_mgd / b)

    def _check_shapes(self, steps: Tensor, teacher: Tensor) -> None:
        student_shape = tuple(steps.shape[1:])
        teacher_shape = tuple(teacher.shape[1:] if per_step_targets(steps, teacher) else teacher.shape)
        if len(student_shape) != 4 or len(teacher_shape) != 4:
            raise ValueError(f'MGDLoss: student {student_shape} vs teacher {teacher_shape}: MGD needs '
                             f'(B, C, H, W) feature maps on both sides')
        if student_shape[1] != self.student_channels:
            raise ValueError(
                f'MGDLoss: student {student_shape} vs teacher {teacher_shape}: the student has '
                f'{student_shape[1]} channels but the loss was built with student_channels='
                f'{self.student_channels}; set student_channels={student_shape[1]} (FeatureDistiller '
                f'fills it per level when the config leaves it out)')
        if teacher_shape[1] != self.teacher_channels:
            raise ValueError(
                f'MGDLoss: student {student_shape} vs teacher {teacher_shape}: the teacher has '
                f'{teacher_shape[1]} channels but the loss was built with teacher_channels='
                f'{self.teacher_channels}; set teacher_channels={teacher_shape[1]} (FeatureDistiller '
                f'fills it per level when the config leaves it out)')
        if student_shape[0] != teacher_shape[0] or student_shape[2:] != teacher_shape[2:]:
            raise ValueError(
                f'MGDLoss: student {student_shape} vs teacher {teacher_shape}: MGD generates the '
                f"teacher's map position by position, so the batch and spatial sizes (B, H, W) must "
                f"agree; configure an adapter that resizes the student to the teacher's size, e.g. "
                f"adapter=dict(type='FeatureAdapter')")

    def extra_repr(self) -> str:
        return (f'student_channels={self.student_channels}, teacher_channels={self.teacher_channels}, '
                f'alpha_mgd={self.alpha_mgd}, lambda_mgd={self.lambda_mgd}, ' + super().extra_repr())
