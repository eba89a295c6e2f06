"""Conditions: what a conditional flow network knows besides state and time.

A condition turns what the distiller knows about a sample into a context
vector ``(B, dim)`` that the meta-encoder adds to its input next to the time
embedding (:class:`~fmkt_mm.flow.MetaEncoder` with ``context_dim=dim``)::

    v = g(Z_t + e(t) + c(context), t)

The context is computed once per sample from the flow's input ``X_S`` (and,
for some conditions, the label or the level) and held fixed for all ``N``
steps, in both directions: the flow with a condition is a family of maps, one
per context, and its inverse is taken at the same context.

Conditions (``type`` in a config):

* ``'pooled'``: the global-average-pooled student representation, ``(B, C)``
  (optionally layer-normalised and projected to ``dim``): an image summary.
* ``'level'`` / ``'task'``: a learned embedding of the level (detection: the
  FPN level of the flow) or task index. With one meta-encoder shared by all
  levels it tells the shared network which level it transports.
* ``'teacher'``: a learned embedding of the teacher a sample is carried
  toward (multi-teacher distillation with one shared flow): every run gets
  the ``(B,)`` teacher indices (:meth:`~fmkt_mm.flow.FlowTransfer.make_context`).
* ``'class'``: a learned class embedding. Training uses the ground-truth
  label (replaced by a learned "no class" entry with probability
  ``drop_prob``); inference has no label and uses ``inference``:
  ``'predicted'`` (the class the flow's head predicts from ``X_S``, i.e. from
  the untransported student), ``'soft'`` (the embedding averaged under those
  predicted probabilities) or ``'none'`` (the "no class" entry; train with
  ``drop_prob > 0`` so that it is learnt). Classification only.
* a list of them: their contexts are concatenated.
"""
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .catalog import CONDITIONS


class FlowCondition(nn.Module):
    """Base class: ``forward(source, level, labels, head, teacher) -> (B, dim)``.

    Args of :meth:`forward`:
        source: the flow's input ``X_S``, ``(B, C)`` or ``(B, C, H, W)``.
        level: index of the flow's level (or task) in the distiller.
        labels: ``(B,)`` ground-truth classes; only read in training.
        head: the flow's head (estimate -> compared output, e.g. logits).
        teacher: ``(B,)`` index of the teacher each sample is carried
            toward (several teachers sharing one flow); None otherwise.
    """

    #: length of the context vector
    dim: int

    def forward(self, source: Tensor, level: int = 0, labels: Optional[Tensor] = None,
                head: Optional[Callable[[Tensor], Tensor]] = None,
                teacher: Optional[Tensor] = None) -> Tensor:
        raise NotImplementedError


class PooledCondition(FlowCondition):
    """Global average pool of ``X_S`` over ``H, W`` (a vector is taken as is),
    layer-normalised (no affine parameters: the encoder's context MLP scales it)
    and, if ``dim`` is given, linearly projected.

    Args:
        channels: ``C`` of ``X_S`` (filled in by the distillers).
        dim: output length; None keeps ``C``.
        normalize: layer-normalise the pooled vector, so the context stays
            O(1) while the student's feature scale drifts in training.
        detach: stop the gradient from the context into the student.
    """

    def __init__(self, channels: int, dim: Optional[int] = None, normalize: bool = True,
                 detach: bool = False) -> None:
        super().__init__()
        self.channels, self.detach = channels, detach
        self.norm = nn.LayerNorm(channels, elementwise_affine=False) if normalize else nn.Identity()
        self.proj = nn.Linear(channels, dim) if dim is not None else nn.Identity()
        self.dim = dim if dim is not None else channels

    def forward(self, source: Tensor, level: int = 0, labels: Optional[Tensor] = None,
                head: Optional[Callable[[Tensor], Tensor]] = None,
                teacher: Optional[Tensor] = None) -> Tensor:
        if source.shape[1] != self.channels:
            raise ValueError(f'PooledCondition(channels={self.channels}) got {tuple(source.shape)}')
        pooled = source.flatten(2).mean(2) if source.dim() > 2 else source
        if self.detach:
            pooled = pooled.detach()
        return self.proj(self.norm(pooled.float()).to(source.dtype))


class LevelCondition(FlowCondition):
    """A learned embedding per level (or task): ``E[level]`` for every sample.

    Args:
        num_levels: number of levels / tasks (filled in by the distillers).
        dim: embedding length.
    """

    def __init__(self, num_levels: int = 1, dim: int = 16) -> None:
        super().__init__()
        if num_levels < 1:
            raise ValueError(f'LevelCondition needs num_levels >= 1, got {num_levels}')
        self.num_levels, self.dim = num_levels, dim
        self.embedding = nn.Embedding(num_levels, dim)

    def forward(self, source: Tensor, level: int = 0, labels: Optional[Tensor] = None,
                head: Optional[Callable[[Tensor], Tensor]] = None,
                teacher: Optional[Tensor] = None) -> Tensor:
        if not 0 <= level < self.num_levels:
            raise ValueError(f'LevelCondition(num_levels={self.num_levels}) got level {level}')
        return self.embedding.weight[level].to(source.dtype).expand(source.shape[0], -1)


class TeacherCondition(FlowCondition):
    """A learned embedding per teacher: ``E[teacher[b]]`` for sample ``b``.
    One flow shared by several teachers is then a family of flows, one per
    teacher, for the parameters of one flow plus ``num_teachers * dim``.

    Args:
        num_teachers: number of teachers (filled in by the distillers).
        dim: embedding length.
    """

    def __init__(self, num_teachers: int = 1, dim: int = 16) -> None:
        super().__init__()
        if num_teachers < 1:
            raise ValueError(f'TeacherCondition needs num_teachers >= 1, got {num_teachers}')
        self.num_teachers, self.dim = num_teachers, dim
        self.embedding = nn.Embedding(num_teachers, dim)

    def forward(self, source: Tensor, level: int = 0, labels: Optional[Tensor] = None,
                head: Optional[Callable[[Tensor], Tensor]] = None,
                teacher: Optional[Tensor] = None) -> Tensor:
        if teacher is None:
            raise ValueError('TeacherCondition needs the (B,) teacher index of every sample: '
                             'make_context(x, teacher=index); a multi-teacher distiller passes it')
        teacher = teacher.reshape(-1).long().to(source.device)
        if teacher.shape[0] != source.shape[0]:
            raise ValueError(f'TeacherCondition got {teacher.shape[0]} teacher indices for a batch '
                             f'of {source.shape[0]}')
        return self.embedding(teacher).to(source.dtype)


class ClassCondition(FlowCondition):
    """A learned class embedding, with a "no class" entry at index ``num_classes``.

    Training (module in train mode, labels given): the ground-truth label,
    replaced by "no class" with probability ``drop_prob`` (so the entry used
    by ``inference='none'`` is trained, and the flow does not learn to rely on
    the label alone). Inference: see ``inference``.

    The ground-truth label is information the deployed model does not have:
    a flow that leans on it in training meets the student's own (sometimes
    wrong) guess at inference. On the Fashion-MNIST logit flow the guess
    (``'predicted'``, ``drop_prob=0.1``) fell to 27.7% top-1 and the soft guess
    to 40.7%, while the defaults (``'none'``, ``drop_prob=0.5``: the label
    only shapes training) reached 71.8% against 75.0% without a condition
    (docs/benchmarks.md, FlowDistill capabilities).

    Args:
        num_classes: number of classes (filled in by the classification distiller).
        dim: embedding length.
        inference: ``'none'`` (default), ``'predicted'`` or ``'soft'`` (module docstring).
        drop_prob: probability of dropping the label in training (default 0.5).
    """

    INFERENCE = ('predicted', 'soft', 'none')

    def __init__(self, num_classes: int, dim: int = 16, inference: str = 'none',
                 drop_prob: float = 0.5) -> None:
        super().__init__()
        if inference not in self.INFERENCE:
            raise ValueError(f'ClassCondition inference must be one of {list(self.INFERENCE)}, '
                             f'got {inference!r}')
        if not 0.0 <= drop_prob <= 1.0:
            raise ValueError(f'ClassCondition drop_prob must lie in [0, 1], got {drop_prob}')
        self.num_classes, self.dim = num_classes, dim
        self.inference, self.drop_prob = inference, drop_prob
        self.embedding = nn.Embedding(num_classes + 1, dim)

    def forward(self, source: Tensor, level: int = 0, labels: Optional[Tensor] = None,
                head: Optional[Callable[[Tensor], Tensor]] = None,
                teacher: Optional[Tensor] = None) -> Tensor:
        b = source.shape[0]
        if self.training and labels is not None:
            index = labels.reshape(-1).long().to(source.device)
            if self.drop_prob > 0:
                # torch's generator, so that runs seeded through MMEngine repeat exactly
                drop = torch.rand(b, device=source.device) < self.drop_prob
                index = torch.where(drop, torch.full_like(index, self.num_classes), index)
            return self.embedding(index).to(source.dtype)
        if self.inference == 'none':
            return self.embedding.weight[self.num_classes].to(source.dtype).expand(b, -1)
        if head is None:
            raise ValueError(f"ClassCondition(inference={self.inference!r}) needs the flow's head "
                             f"to predict the class; use inference='none' where there is no head")
        with torch.no_grad():  # the guess only selects the embedding; no gradient into the head
            logits = head(source).float()
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f'ClassCondition(num_classes={self.num_classes}) got head outputs of '
                             f'shape {tuple(logits.shape)}; it needs (B, {self.num_classes}) logits')
        if self.inference == 'predicted':
            return self.embedding(logits.argmax(1)).to(source.dtype)
        probs = logits.softmax(1)
        return (probs @ self.embedding.weight[:self.num_classes].float()).to(source.dtype)


class CompositeCondition(FlowCondition):
    """Several conditions; their contexts are concatenated."""

    def __init__(self, conditions: Sequence[FlowCondition]) -> None:
        super().__init__()
        if not conditions:
            raise ValueError('CompositeCondition needs at least one condition')
        self.conditions = nn.ModuleList(conditions)
        self.dim = sum(c.dim for c in conditions)

    def forward(self, source: Tensor, level: int = 0, labels: Optional[Tensor] = None,
                head: Optional[Callable[[Tensor], Tensor]] = None,
                teacher: Optional[Tensor] = None) -> Tensor:
        extra = {} if teacher is None else dict(teacher=teacher)  # older conditions lack it
        return torch.cat([c(source, level, labels, head, **extra) for c in self.conditions], dim=1)


CONDITIONS.register('pooled', 'PooledCondition')(PooledCondition)
CONDITIONS.register('level', 'task', 'LevelCondition')(LevelCondition)
CONDITIONS.register('class', 'ClassCondition')(ClassCondition)
CONDITIONS.register('teacher', 'TeacherCondition')(TeacherCondition)


def build_condition(cfg: Union[None, str, dict, Sequence, nn.Module], channels: int,
                    num_levels: int = 1, num_classes: Optional[int] = None,
                    num_teachers: int = 1) -> Optional[nn.Module]:
    """Build a condition from its config; the distillers fill in ``channels``
    (pooled), ``num_levels`` (level/task), ``num_classes`` (class) and
    ``num_teachers`` (teacher).

    ``cfg``: None, a type name (``'pooled'``), a dict with ``type``, a built
    module, or a list of these (concatenated contexts).
    """
    if cfg is None or isinstance(cfg, nn.Module):
        return cfg
    if isinstance(cfg, (list, tuple)):
        return CompositeCondition([build_condition(c, channels, num_levels, num_classes, num_teachers)
                                   for c in cfg])
    cfg = dict(type=cfg) if isinstance(cfg, str) else dict(cfg)
    name = cfg.pop('type', None)
    cls = name if isinstance(name, type) else CONDITIONS.get(name) if isinstance(name, str) else None
    if cls is None:
        short = [n for n in CONDITIONS.names() if n[:1].islower()]
        raise ValueError(f'unknown flow condition {name!r}; choose one of {short} (or a list of them)')
    if issubclass(cls, PooledCondition):
        cfg.setdefault('channels', channels)
    elif issubclass(cls, LevelCondition):
        cfg.setdefault('num_levels', num_levels)
    elif issubclass(cls, TeacherCondition):
        cfg.setdefault('num_teachers', num_teachers)
    elif issubclass(cls, ClassCondition):
        if num_classes is None and 'num_classes' not in cfg:
            raise ValueError("condition type 'class' needs num_classes: it conditions a "
                             'classifier\'s flow on the class (set num_classes=... in the condition)')
        cfg.setdefault('num_classes', num_classes)
    return cls(**cfg)


def names_condition(cfg: Union[None, str, dict, Sequence, nn.Module], kind: type) -> bool:
    """Whether a condition config (a name, a dict with ``type``, a built
    module, or a list of them) holds a condition of class ``kind``; a name
    may carry a scope (``'fmkt_mm.class'``)."""
    items = [] if cfg is None else list(cfg) if isinstance(cfg, (list, tuple)) else [cfg]
    for item in items:
        if isinstance(item, nn.Module):
            found = type(item)
        else:
            name = item.get('type') if isinstance(item, dict) else item
            found = name if isinstance(name, type) else \
                CONDITIONS.get(name.split('.')[-1]) if isinstance(name, str) else None
        if found is not None and issubclass(found, kind):
            return True
    return False


def with_teacher_condition(cfg: Union[None, str, dict, Sequence, nn.Module]) -> Union[str, dict, list, nn.Module]:
    """A condition config plus the ``'teacher'`` condition (unless it
    already holds one): one flow shared by several teachers."""
    if names_condition(cfg, TeacherCondition):
        return cfg
    items = [] if cfg is None else list(cfg) if isinstance(cfg, (list, tuple)) else [cfg]
    return items + [dict(type='teacher')]

