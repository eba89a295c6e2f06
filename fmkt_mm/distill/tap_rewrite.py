"""Rewriting a tapped module's output for the duration of a block.

The level distillers sit between a student's tap (its neck, a backbone
stage, a head's last convolution) and whatever reads it: a forward hook on
the tap hands the tapped levels to a function and returns what that
function gives back, so the student's own ``loss`` / ``predict`` run
unchanged around it.
"""
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional

from torch import Tensor, nn

from .levels import as_levels
from .taps import get_module


class TapCall:
    """What a rewrite saw: :attr:`raw`, the tap's own levels (before the
    rewrite) once the tap has run."""

    def __init__(self) -> None:
        self.calls = 0
        self.raw: Optional[List[Tensor]] = None


@contextmanager
def rewrite_tap(model: nn.Module, path: str, rewrite: Callable[[List[Tensor]], List[Tensor]],
                who: str = 'student') -> Iterator[TapCall]:
    """Within the block, the output of ``model``'s module ``path`` is
    ``rewrite(levels)`` (same container type: one tensor, a tuple or a list).
    The tap must run exactly once: twice raises at the second call (a tap
    that runs per level or per stage is the wrong module), never raises when
    the block ends."""
    call = TapCall()

    def hook(module, inputs, output):
        call.calls += 1
        if call.calls > 1:
            raise RuntimeError(f'the {who}\'s {path!r} ran twice in one forward pass; the distiller '
                               f'expects one call per batch (set student_tap to a module that runs once)')
        call.raw = as_levels(output, path, who)
        levels = rewrite(call.raw)
        if isinstance(output, Tensor):
            return levels[0]
        return tuple(levels) if isinstance(output, tuple) else list(levels)

    handle = get_module(model, path, who).register_forward_hook(hook)
    try:
        yield call
    finally:
        handle.remove()
    if call.calls == 0:
        raise RuntimeError(f'the {who} never ran {path!r}; tap a module that its forward calls (e.g. neck)')
