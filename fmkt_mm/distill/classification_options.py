"""The deploy modes of the classification distiller, and the classifier
tail its flows read through.

``deploy_mode='flow' | 'student'`` and ``online=True`` are the names shared
with the detection distiller; the earlier ``variant`` names map onto them.
"""
import warnings
from typing import Optional, Tuple

from torch import Tensor, nn

from .level_options import DEPLOY_MODES

#: the earlier ``variant`` names -> ``(deploy_mode, online)``
VARIANTS = dict(fmkt=('flow', False), fmkt_theta=('student', False), ofmkt=('student', True))


def resolve_mode(deploy_mode: Optional[str] = None, online: Optional[bool] = None,
                 variant: Optional[str] = None) -> Tuple[str, bool]:
    """``(deploy_mode, online)`` from the arguments. ``variant`` is the
    earlier name of a pair and wins over the new keys (a child config that
    sets ``variant`` on top of a base that sets ``deploy_mode`` means the
    variant), with a warning naming what it overrides."""
    if variant is not None:
        if variant not in VARIANTS:
            raise ValueError(f'unknown variant {variant!r}; choose one of {list(VARIANTS)} '
                             f"(or deploy_mode='flow' | 'student' and online=True)")
        mode, is_online = VARIANTS[variant]
        if (deploy_mode is not None and deploy_mode != mode) or (online is not None and online != is_online):
            warnings.warn(f'variant={variant!r} (the earlier name) means deploy_mode={mode!r}, '
                          f'online={is_online}; it overrides deploy_mode={deploy_mode!r}, online={online} '
                          f'from the config. Write deploy_mode={mode!r}, online={is_online} instead.')
        return mode, is_online
    mode = 'flow' if deploy_mode is None else deploy_mode
    if mode not in DEPLOY_MODES:
        raise ValueError(f'unknown deploy_mode {mode!r}; choose one of {list(DEPLOY_MODES)}')
    if online and mode == 'flow':
        raise ValueError("online=True (OFM-KT) deploys the plain student: set deploy_mode='student'")
    return mode, bool(online)


class ClassifierTail(nn.Module):
    """neck (optional) + head of an mmpretrain classifier: feature -> logits."""

    def __init__(self, neck: Optional[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.neck, self.head = neck, head

    @classmethod
    def of(cls, classifier: nn.Module) -> 'ClassifierTail':
        """The tail of an mmpretrain ``ImageClassifier`` (its own modules)."""
        return cls(getattr(classifier, 'neck', None), classifier.head)

    def forward(self, feature: Tensor) -> Tensor:
        feats = (feature,)
        if self.neck is not None:
            feats = self.neck(feats)
        return self.head(feats)
