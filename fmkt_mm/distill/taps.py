"""Reading a model's intermediate outputs by module path.

A *tap* is a dotted module path (``'backbone'``, ``'neck'``, ``'head.fc'``,
``'backbone.layer4.1'``) whose forward output is recorded by a hook. No code
knows any model's internals beyond the paths a config gives.
"""
import difflib
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

from torch import nn


class _TapsComplete(Exception):
    """Raised by the last tap hook to stop a forward pass early."""


def get_module(model: nn.Module, path: str, model_name: str = 'model') -> nn.Module:
    """``model``'s submodule at ``path``; an unknown path raises a ValueError
    that lists the paths that exist (closest first)."""
    modules = dict(model.named_modules())
    if path in modules and path != '':
        return modules[path]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
    top_level = sorted({n.split('.')[0] for n in names})
    shallow = [n for n in names if n.count('.') <= 1]
    listing = ', '.join(shallow[:60]) + (f', ... ({len(shallow) - 60} more)' if len(shallow) > 60 else '')
    raise ValueError(
        f'unknown module path {path!r} in the {model_name} ({type(model).__name__}). '
        + (f'Closest: {close}. ' if close else '')
        + f'Top-level modules: {top_level}. Paths (two levels): {listing}')


@contextmanager
def record_outputs(model: nn.Module, paths: Sequence[str], model_name: str = 'model',
                   stop_when_complete: bool = False) -> Iterator[Dict[str, object]]:
    """Record the outputs of the modules at ``paths`` while the block runs.

    With ``stop_when_complete``, the forward pass is aborted as soon as every
    tapped module has produced its output: a frozen teacher then runs only as
    far as the representations that are read (run the forward through
    :func:`run_until_tapped`).
    """
    outputs: Dict[str, object] = {}
    wanted = set(paths)
    handles = []

    def make_hook(path):
        def hook(module, inputs, output):
            outputs[path] = output
            if stop_when_complete and wanted.issubset(outputs):
                raise _TapsComplete
        return hook

    for path in paths:
        handles.append(get_module(model, path, model_name).register_forward_hook(make_hook(path)))
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def run_until_tapped(model: nn.Module, paths: Sequence[str], forward: Callable[[], object],
                     model_name: str = 'model') -> Dict[str, object]:
    """Run ``forward()`` until all tapped modules have fired; return their outputs."""
    with record_outputs(model, paths, model_name, stop_when_complete=True) as outputs:
        try:
            forward()
        except _TapsComplete:
            pass
    missing = [p for p in paths if p not in outputs]
    if missing:
        raise ValueError(f'the {model_name} never ran the modules {missing} in its forward pass; '
                         f'tap modules that its forward calls')
    return outputs


def select(output: Any, index: Optional[int] = None) -> Any:
    """A tapped output, or one element of a tuple/list output.

    ``index=None`` takes the only (or the last) element of a sequence, which is
    what backbones with ``out_indices=(3,)`` return.
    """
    if isinstance(output, (tuple, list)):
        return output[-1 if index is None else index]
    return output
