"""Whether a state dict fits a model, and loading it only when it does.

A checkpoint that would leave tensors of the model unloaded, or holds tensors
the model has no place for, is refused with the keys and the likely cause
(:func:`check_fit`, :func:`load_state`); a model's older saved layouts are
renamed first (:func:`upgraded`), and resuming one, whose optimizer state
lists the parameters in the old order, is refused (:func:`refuse_older_layout`).
Reading the files themselves is :mod:`fmkt_mm.checkpoint`'s.
"""
import warnings
from typing import Dict, Iterable, List, Optional

import torch
from torch import nn

from .checkpoint import CheckpointMismatchError, extract_state_dict, safe_torch_load

#: a distiller's state-dict prefixes (``BaseDistiller``'s student and teacher):
#: the one home of these names
STUDENT_PREFIX, TEACHER_PREFIX = 'student.', 'teacher.'


def _fmt(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def load_weights(model: nn.Module, path: str, strict: bool = True, allow_unsafe_pickle: bool = False,
                 what: str = 'checkpoint', prefix: Optional[str] = None,
                 role: Optional[str] = None) -> List[str]:
    """Load the weights in ``path`` (a file or URL) into ``model``.

    ``strict=True`` fails with the lists of missing, unexpected and
    wrong-shape keys; ``strict=False`` loads the keys that fit and returns
    the list of problems (also warned). ``prefix`` keeps only keys under it
    (and strips it), e.g. ``'student.'`` of a distillation checkpoint.
    """
    state = extract_state_dict(safe_torch_load(path, allow_unsafe_pickle=allow_unsafe_pickle, what=what,
                                               role=role))
    return load_state(model, state, strict=strict, what=f'{what} {path!r}', prefix=prefix)


def upgraded(model: nn.Module, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state`` (a new dict) with the renames of the model's older saved
    layouts applied: its ``upgrade_state_dict(state)``, if it has one (a
    level distiller's adapters, once saved inside its flows)."""
    upgrade = getattr(model, 'upgrade_state_dict', None)
    state = dict(state)
    if upgrade is not None:
        upgrade(state)
    return state


def refuse_older_layout(model: nn.Module, state: Dict[str, torch.Tensor], filename: str) -> None:
    """Refuse to resume a checkpoint in an older saved layout of ``model``
    whose upgrade moves parameters to other places in the parameter order
    (the count its ``upgrade_state_dict`` returns): the checkpoint's
    optimizer state lists the parameters in the old order, and restored by
    position it would give their moments to other parameters. A plain
    rename resumes."""
    upgrade = getattr(model, 'upgrade_state_dict', None)
    if upgrade is None:
        return
    new = dict(state)
    if upgrade(new):
        renamed = sorted(set(state) - set(new))
        raise CheckpointMismatchError(
            f'checkpoint {filename!r} was saved with another parameter layout (e.g. {renamed[0]!r}; '
            f'{len(renamed)} keys renamed since): its weights load, but its optimizer state follows the '
            f'old parameter order and cannot be resumed. Continue from its weights with a fresh optimizer: '
            f'load_from={filename!r} and resume=False (tools/train.py: --cfg-options load_from=... '
            f'without --resume), or resume with the fmkt_mm version that wrote it.')


def fit_problems(model: nn.Module, state: Dict[str, torch.Tensor],
                 optional_prefixes: Iterable[str] = ()) -> List[str]:
    """What keeps ``state`` from loading exactly into ``model``: missing,
    unexpected and wrong-shape keys (missing keys under
    ``optional_prefixes`` excepted), each list shortened for messages."""
    state = upgraded(model, state)
    own = model.state_dict()
    optional = tuple(optional_prefixes)
    missing = [k for k in own if k not in state and not (optional and k.startswith(optional))]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [f'{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)})'
                   for k in own if k in state and hasattr(state[k], 'shape') and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f'missing keys ({len(missing)}): {_fmt(missing)}')
    if unexpected:
        problems.append(f'unexpected keys ({len(unexpected)}): {_fmt(unexpected)}')
    if wrong_shape:
        problems.append(f'keys with another shape ({len(wrong_shape)}): {_fmt(wrong_shape)}')
    return problems


def load_state(model: nn.Module, state: Dict[str, torch.Tensor], strict: bool = True,
               what: str = 'checkpoint', prefix: Optional[str] = None) -> List[str]:
    """:func:`load_weights` for a state dict already read."""
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    problems = fit_problems(model, state)
    if problems and strict:
        raise CheckpointMismatchError(
            f'{what} does not fit its model config:\n  ' + '\n  '.join(problems) +
            '\nCheck that the config describes the model the checkpoint was trained as (backbone '
            'depth, num_classes, ...). To load only the keys that fit, set strict=False.')
    own, state = model.state_dict(), upgraded(model, state)
    fitting = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(fitting, strict=False)
    if problems:
        warnings.warn(f'{what} loaded partially ({len(fitting)}/{len(own)} tensors):\n  ' +
                      '\n  '.join(problems))
    return problems


#: a distiller's state-dict prefixes (``BaseDistiller``'s student and teacher):
#: the one home of these names
STUDENT_PREFIX, TEACHER_PREFIX = 'student.', 'teacher.'


def check_fit(model: nn.Module, state: Dict[str, torch.Tensor], what: str = 'checkpoint',
              lenient: bool = False, plain_student_ok: bool = False) -> List[str]:
    """Refuse a checkpoint for ``load_from``, resume or testing that would
    leave tensors of ``model`` unloaded (or hold tensors it has no place
    for), with the keys and the likely cause; returns the problems instead
    when ``lenient`` (MMEngine's partial loading, asked for by the user).

    What a checkpoint may lack:

    * a distiller's teacher, when it holds no ``teacher.*`` tensor at all:
      the teacher was then loaded from its own file when the model was built;
    * with ``plain_student_ok`` (``load_from`` of a training run), everything
      but the student, when it is a plain model checkpoint that fits the
      student entirely: the student starts from it, the flows are new.
    """
    own = model.state_dict()
    distiller = any(k.startswith(STUDENT_PREFIX) for k in own)
    holds_distiller = any(k.startswith(STUDENT_PREFIX) for k in state)
    plain_for_distiller = distiller and not any(k.startswith((STUDENT_PREFIX, TEACHER_PREFIX)) for k in state) and \
        any(STUDENT_PREFIX + k in own for k in state)
    if plain_for_distiller and plain_student_ok:
        problems = fit_problems(model.student, state)
        cause = ('this plain model checkpoint was trained as another student (backbone depth, widths, '
                 'num_classes, ...) than the config\'s')
    else:
        optional = (TEACHER_PREFIX, ) if any(k.startswith(TEACHER_PREFIX) for k in own) and \
            not any(k.startswith(TEACHER_PREFIX) for k in state) else ()
        problems = fit_problems(model, state, optional)
        if plain_for_distiller:
            cause = ('it is a plain model checkpoint, and this is a distillation config. Test it with '
                     'the student\'s own config (or start a training from it with load_from)')
        elif holds_distiller and not distiller:
            cause = ('it is a distillation checkpoint, and this is a plain model config. Use the '
                     'distillation config, or export the student first: python tools/export_student.py '
                     'DISTILLATION_CONFIG CHECKPOINT student.pth')
        else:
            cause = ('it was trained with another config (backbone depth, widths, num_classes, flow '
                     'settings, ...) than this one')
    if not problems or lenient:
        return problems
    raise CheckpointMismatchError(
        f'{what} does not fit the model. Likely cause: {cause}.\n  ' + '\n  '.join(problems) +
        '\nTo load only what fits (MMEngine\'s lenient loading), set allow_partial_load=True '
        '(tools: --allow-partial-load).')
