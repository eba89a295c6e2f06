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
  in for that file's role (:data:`OPT_INS`: the teacher's
  ``allow_unsafe_pickle=True``, ``--allow-unsafe-pickle`` of the tools for
  ``load_from`` / ``--resume`` and for the checkpoint tested). Where a file
  lies gives it no trust: the runs' own checkpoints load with
  ``weights_only=True`` (:class:`~fmkt_mm.hooks.SafeCheckpointHook`);
* anything else is refused with an :class:`UnsafeCheckpointError` that names
  the globals it would load or call and the opt-in of its role.

Files are verified before they are trusted for anything: a checkpoint with a
sha256 sidecar (every checkpoint the runs write, :mod:`fmkt_mm.storage`) must
match it, and a truncated or unreadable file raises
:class:`~fmkt_mm.storage.CorruptCheckpointError` naming the file. A
checkpoint given by URL is downloaded once into torch's hub cache and then
loaded exactly as a local file.
"""
import os.path as osp
import pickle
import pickletools
import warnings
import zipfile
from typing import Any, Callable, Dict, List, Optional, Set, Union

import torch

from .storage import (  # noqa: F401
    AtomicLocalBackend,
    CorruptCheckpointError,
    atomic_torch_save,
    atomic_write,
    fetch_url,
    is_url,
    verify_checksum,
)


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint needs arbitrary unpickling and nobody vouched for it."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model it is loaded into."""


class NotACheckpointError(CorruptCheckpointError):
    """A file given as a checkpoint is not one at all (text, JSON, an HTML
    page, an empty or random file): no opt-in can load it."""


#: how a torch checkpoint starts: a zip archive, or a pickle (protocol 2+)
_ZIP_MAGIC, _PICKLE_PROTO = b'PK\x03\x04', 0x80


def what_file_is(path: str) -> Optional[str]:
    """None for a file that starts as a torch checkpoint (a zip archive or
    a pickle), else what it looks like instead."""
    with open(path, 'rb') as f:
        head = f.read(512)
    if head.startswith(_ZIP_MAGIC) or head[:1] == bytes([_PICKLE_PROTO]):
        return None
    if not head:
        return 'an empty file'
    try:
        text = head.decode('utf-8').lstrip()
    except UnicodeDecodeError:
        return f'binary data that is neither a zip archive nor a pickle (it starts with {head[:8].hex()})'
    if text.startswith('<'):
        return 'an HTML or XML page (a download that saved an error page, e.g. a 404, in place of the file?)'
    if text.startswith(('{', '[')):
        return 'JSON text'
    return f'a text file (it starts with {text[:40]!r})'


#: how a user opts in to full unpickling, by the role of the file
OPT_INS = {
    'teacher': "allow_unsafe_pickle=True in the teacher's dict (teacher=dict(config=..., "
               "checkpoint=..., allow_unsafe_pickle=True))",
    'train': 'tools/train.py --allow-unsafe-pickle (or the config key allow_unsafe_pickle=True), '
             'which covers load_from and --resume',
    'test': 'tools/test.py --allow-unsafe-pickle (or the config key allow_unsafe_pickle=True)',
    'export': 'tools/export_student.py --allow-unsafe-pickle',
    None: '--allow-unsafe-pickle of tools/train.py or tools/test.py (or the config key '
          'allow_unsafe_pickle=True)',
}


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


def restricted_getattr(owner: Any, name: str, *default: Any) -> Any:
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
    accepts: what would be loaded or called if the file were unpickled in
    full. Zip checkpoints are read by torch; legacy torch files and raw
    pickles by scanning their pickle opcodes (nothing is executed)."""
    if zipfile.is_zipfile(path):
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # an unreadable archive: the load itself says so
            return []
    else:
        found = _pickled_globals(path)
    return sorted(set(found) - _data_only_names() - _torch_safe_names())


def _torch_safe_names() -> Set[str]:
    """Globals torch's weights_only unpickler rebuilds by itself (tensors,
    storages, ordered dicts), which a legacy file names too."""
    names = {'collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_parameter',
             'torch._utils._rebuild_parameter_with_state', 'torch.Size', 'torch._tensor._rebuild_from_type_v2'}
    names.update(f'torch.{name}' for name in dir(torch) if name.endswith('Storage'))
    names.update(f'torch.{dtype}' for dtype in ('float32', 'float16', 'bfloat16', 'float64', 'int64',
                                                'int32', 'int8', 'uint8', 'bool'))
    return names


def _pickled_globals(path: str) -> List[str]:
    """``module.name`` of every GLOBAL / STACK_GLOBAL / INST opcode in the
    pickles at the start of ``path`` (a legacy torch file is several pickles
    in a row, then raw tensor bytes, where the scan stops)."""
    found = []
    with open(path, 'rb') as f:
        while True:
            strings, memo = [], {}
            try:
                for opcode, arg, _ in pickletools.genops(f):
                    if opcode.name in ('GLOBAL', 'INST'):
                        found.append(arg.replace(' ', '.'))
                    elif isinstance(arg, str) and ('UNICODE' in opcode.name or 'STRING' in opcode.name):
                        strings.append(arg)
                    elif opcode.name == 'MEMOIZE' and strings:
                        memo[len(memo)] = strings[-1]
                    elif opcode.name in ('BINGET', 'LONG_BINGET', 'GET') and arg in memo:
                        strings.append(memo[arg])
                    elif opcode.name == 'STACK_GLOBAL' and len(strings) >= 2:
                        found.append(f'{strings[-2]}.{strings[-1]}')
            except Exception:  # the end of the pickles (or not a pickle at all)
                break
    return found


def safe_torch_load(path: str, map_location: Union[str, torch.device, Callable, Dict[str, str], None] = 'cpu',
                    allow_unsafe_pickle: bool = False, what: str = 'checkpoint',
                    role: Optional[str] = None) -> Any:
    """``torch.load`` with ``weights_only=True`` and the data-only allow-list;
    full unpickling only with ``allow_unsafe_pickle`` (see the module
    docstring). ``role`` (``'teacher'``, ``'train'``, ``'test'``) picks the
    opt-in a refusal names. An ``http(s)://`` path is fetched first
    (:func:`~fmkt_mm.storage.fetch_url`); a file with a checksum sidecar is
    verified against it."""
    if is_url(path):
        path = fetch_url(path, what=what)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path!r} (resolved to {osp.abspath(path)!r}); '
                                f'check the path in the config')
    verify_checksum(path)
    looks_like = what_file_is(path)
    if looks_like is not None:
        raise NotACheckpointError(
            f'{what} {path!r} is not a checkpoint: it is {looks_like}, where a file written by '
            f'torch.save (a zip archive or a pickle) was expected. Check the path; if it was '
            f'downloaded, download it again')
    try:
        with torch.serialization.safe_globals(data_only_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_unsafe_pickle:
            raise _refusal(path, err, what, role) from None
        warnings.warn(f'{what} {path!r} is being unpickled without weights_only protection '
                      f'because allow_unsafe_pickle=True: it can run arbitrary code')
        return torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, IndexError, zipfile.BadZipFile) as err:
        raise CorruptCheckpointError(
            f'{what} {path!r} is truncated or not a checkpoint ({_first_line(err)}): a save that was '
            f'interrupted, or a partial copy or download. Use an earlier checkpoint (resume falls back '
            f'to the newest complete one by itself)') from None


def _refusal(path: str, err: Exception, what: str, role: Optional[str]) -> UnsafeCheckpointError:
    offending = unsafe_globals(path)
    why = (f'unpickling it would load or call {", ".join(offending)}' if offending else
           f'it holds records beyond tensors and data ({_first_line(err)})')
    return UnsafeCheckpointError(
        f'refusing to load {what} {path!r}: {why}, which can execute arbitrary code. '
        f'Checkpoints of the stock OpenMMLab tools (weights, meta, message hub, optimizer) '
        f'load without this; if you trust this file, opt in with {OPT_INS.get(role, OPT_INS[None])}, '
        f'or re-save it as a plain state_dict (torch.save(model.state_dict(), path)).')


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    specific = [line for line in lines if 'Unsupported' in line or 'not a data record' in line]
    return (specific or lines or [type(err).__name__])[0]


def extract_state_dict(checkpoint: Any) -> Dict[str, torch.Tensor]:
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


def _load_local(filename, map_location=None):
    """MMEngine's loader for local files and URLs, through :func:`safe_torch_load`."""
    return safe_torch_load(filename if is_url(filename) else osp.expanduser(filename),
                           map_location=map_location)


def register_safe_local_loader() -> None:
    """Route MMEngine's checkpoint loading of local files and ``http(s)://``
    URLs (``load_from``, ``resume``, ``init_cfg=dict(type='Pretrained')``)
    through the policy above, with clear errors instead of a raw pickle one."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=_load_local, force=True)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), loader=_load_local, force=True)


register_safe_local_loader()
