"""Loading checkpoints without turning off torch's unpickling protection.

Policy:

* every file is first read with ``torch.load(weights_only=True)``, which
  cannot run code, extended by an allow-list of data-only records that
  checkpoints of the stock OpenMMLab tools hold besides tensors
  (:func:`data_only_globals`): MMEngine's ``HistoryBuffer`` (the message
  hub's logs), numpy arrays, scalars and dtypes, and a ``getattr`` that
  resolves only the attributes those records are pickled with. So a
  checkpoint written by any MMEngine ``Runner`` (mmpretrain's or mmdet's
  ``tools/train.py``) loads with no opt-in, and its weights come out exactly;
* a file that needs full unpickling is loaded that way only if the user opted
  in for it (``allow_unsafe_pickle=True``) or if it lies in a directory this
  process trusts: the work directory of the current run, whose checkpoints
  the run wrote itself (MMEngine stores its message hub in them, which
  ``weights_only`` cannot read);
* anything else is refused with an :class:`UnsafeCheckpointError` that says
  why and how to opt in.

Writing: :func:`atomic_write` and the ``'atomic_local'`` file backend write
into a temporary file beside the target and rename it over the target, so a
process killed while saving leaves either the old file or the new one, never
a truncated one.
"""
import os
import os.path as osp
import pickle
import tempfile
import warnings
from typing import BinaryIO, Callable, Dict, Iterable, List, Optional, Set, Union

import torch
from mmengine.fileio import LocalBackend, register_backend
from torch import nn

_TRUSTED_DIRS: Set[str] = set()
_TRUSTED_FILES: Set[str] = set()


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint needs arbitrary unpickling and nobody vouched for it."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model it is loaded into."""


def trust_directory(path: str) -> None:
    """Allow full unpickling of checkpoints under ``path`` (a run's work dir)."""
    _TRUSTED_DIRS.add(osp.realpath(path))


def trust_file(path: str) -> None:
    """Allow full unpickling of the single file ``path``: the explicit opt-in
    for a checkpoint given by the user (``tools/train.py --resume PATH
    --allow-unsafe-pickle``)."""
    _TRUSTED_FILES.add(osp.realpath(path))


def is_trusted(path: str) -> bool:
    real = osp.realpath(path)
    return real in _TRUSTED_FILES or any(real == d or real.startswith(d + os.sep) for d in _TRUSTED_DIRS)


def _getattr_owners() -> Dict[object, Callable[[str], bool]]:
    """The objects whose attributes a data-only checkpoint may look up, with
    the names allowed on each."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    # a HistoryBuffer's state names its statistics methods (MMEngine registers
    # these four by default; register_statistics may add more)
    statistics = {'min', 'max', 'mean', 'current'}
    owners = {HistoryBuffer: lambda name: name in statistics or name in HistoryBuffer._statistics_methods}
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25 pickles dtype classes through it
    if dtypes is not None:
        owners[dtypes] = lambda name: name.endswith('DType') and isinstance(getattr(dtypes, name, None), type)
    return owners


def restricted_getattr(owner, name, *default):
    """``getattr`` as a data-only checkpoint may call it: only the statistics
    methods of MMEngine's ``HistoryBuffer`` (which its pickled state names)
    and numpy's dtype classes; anything else is refused before it is looked
    up."""
    allowed = _getattr_owners().get(owner)
    if not isinstance(name, str) or allowed is None or not allowed(name):
        raise pickle.UnpicklingError(
            f'getattr({getattr(owner, "__name__", type(owner).__name__)}, {name!r}) is not a data '
            f'record of an OpenMMLab checkpoint')
    return getattr(owner, name)


def data_only_globals() -> List:
    """What ``torch.load(weights_only=True)`` may rebuild besides tensors:
    the records MMEngine's ``Runner`` writes into every checkpoint, none of
    which runs code when rebuilt (``torch.serialization.safe_globals``
    entries; names numpy 1.x and 2.x pickle under are both listed)."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    entries = [HistoryBuffer, np.ndarray, np.dtype, (restricted_getattr, 'builtins.getattr')]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries += [(multiarray._reconstruct, f'{module}._reconstruct'),
                    (multiarray.scalar, f'{module}.scalar')]
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        entries += [cls for name, cls in vars(dtypes).items()
                    if name.endswith('DType') and isinstance(cls, type)]
    return entries


def _data_only_names() -> Set[str]:
    names = set()
    for entry in data_only_globals():
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f'{entry.__module__}.{entry.__qualname__}')
    return names


def unsafe_globals(path: str) -> List[str]:
    """The globals in ``path`` that neither torch nor the data-only allow-list
    accepts: what would run if the file were unpickled in full."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint (legacy format): nothing to list
        return []
    return sorted(set(found) - _data_only_names())


def safe_torch_load(path: str, map_location='cpu', allow_unsafe_pickle: bool = False,
                    what: str = 'checkpoint'):
    """``torch.load`` with ``weights_only=True`` and the data-only allow-list,
    falling back to full unpickling only for opted-in or trusted files (see
    the module docstring)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path!r} (resolved to {osp.abspath(path)!r}); '
                                f'check the path in the config')
    try:
        with torch.serialization.safe_globals(data_only_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if allow_unsafe_pickle or is_trusted(path):
            if allow_unsafe_pickle:
                warnings.warn(f'{what} {path!r} is being unpickled without weights_only protection '
                              f'because allow_unsafe_pickle=True: it can run arbitrary code')
            return torch.load(path, map_location=map_location, weights_only=False)
        offending = unsafe_globals(path)
        why = (f'unpickling it would call {", ".join(offending)}' if offending else
               f'it holds records beyond tensors and data '
               f'({_first_line(err)})')
        raise UnsafeCheckpointError(
            f'refusing to load {what} {path!r}: {why}, which can execute arbitrary code. '
            f'Checkpoints of the stock OpenMMLab tools (weights, meta, message hub, optimizer) '
            f'load without this; if you trust this file, opt in with allow_unsafe_pickle=True '
            f'(tools: --allow-unsafe-pickle), or re-save it as a plain state_dict '
            f'(torch.save(model.state_dict(), path)).') from None


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    specific = [line for line in lines if 'Unsupported' in line or 'not a data record' in line]
    return (specific or lines or [type(err).__name__])[0]


def extract_state_dict(checkpoint) -> Dict[str, torch.Tensor]:
    """The model weights of a checkpoint: ``state_dict`` / ``model`` entries
    or the dict itself, without a DataParallel ``module.`` prefix."""
    state = checkpoint
    if isinstance(checkpoint, dict):
        for key in ('state_dict', 'model'):
            if isinstance(checkpoint.get(key), dict):
                state = checkpoint[key]
                break
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f'expected a dict of tensors in the checkpoint, got {type(state)}')
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


def _fmt(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def load_weights(model: nn.Module, path: str, strict: bool = True, allow_unsafe_pickle: bool = False,
                 what: str = 'checkpoint', prefix: Optional[str] = None) -> List[str]:
    """Load the weights in ``path`` into ``model``.

    ``strict=True`` fails with the lists of missing, unexpected and
    wrong-shape keys; ``strict=False`` loads the keys that fit and returns
    the list of problems (also warned). ``prefix`` keeps only keys under it
    (and strips it), e.g. ``'student.'`` of a distillation checkpoint.
    """
    state = extract_state_dict(safe_torch_load(path, allow_unsafe_pickle=allow_unsafe_pickle, what=what))
    return load_state(model, state, strict=strict, what=f'{what} {path!r}', prefix=prefix)


def load_state(model: nn.Module, state: Dict[str, torch.Tensor], strict: bool = True,
               what: str = 'checkpoint', prefix: Optional[str] = None) -> List[str]:
    """:func:`load_weights` for a state dict already read."""
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [f'{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)})'
                   for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f'missing keys ({len(missing)}): {_fmt(missing)}')
    if unexpected:
        problems.append(f'unexpected keys ({len(unexpected)}): {_fmt(unexpected)}')
    if wrong_shape:
        problems.append(f'keys with another shape ({len(wrong_shape)}): {_fmt(wrong_shape)}')
    if problems and strict:
        raise CheckpointMismatchError(
            f'{what} does not fit its model config:\n  ' + '\n  '.join(problems) +
            '\nCheck that the config describes the model the checkpoint was trained as (backbone '
            'depth, num_classes, ...). To load only the keys that fit, set strict=False.')
    fitting = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(fitting, strict=False)
    if problems:
        warnings.warn(f'{what} loaded partially ({len(fitting)}/{len(own)} tensors):\n  ' +
                      '\n  '.join(problems))
    return problems


def atomic_write(path: str, data: Union[bytes, Callable[[BinaryIO], None]]) -> None:
    """Write ``data`` (bytes, or a function that writes into a binary file)
    to ``path`` atomically: into a temporary file in the same directory,
    flushed to disk, then renamed over ``path``. If anything fails on the way
    (or the process dies), ``path`` keeps its previous content, or stays
    absent; the temporary file is removed on errors (a killed process leaves
    a hidden ``.NAME.*.tmp`` that nothing reads)."""
    path = osp.abspath(osp.expanduser(str(path)))
    directory = osp.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path) + '.', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f))


@register_backend('atomic_local', force=True)
class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend with atomic ``put`` / ``put_text``.

    Checkpoints are written with it when the checkpoint hook says
    ``backend_args=dict(backend='atomic_local')``, which the tools set for
    local work directories (:func:`fmkt_mm.apis.prepare_work_dir`).
    """

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(str(filepath), obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(str(filepath), obj.encode(encoding))


def _load_local(filename, map_location=None):
    """MMEngine's loader for local files, through :func:`safe_torch_load`."""
    return safe_torch_load(osp.expanduser(filename), map_location=map_location)


def register_safe_local_loader():
    """Route MMEngine's local checkpoint loading (``load_from``, ``resume``)
    through the policy above, with clear errors instead of a raw pickle one."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=_load_local, force=True)


register_safe_local_loader()
