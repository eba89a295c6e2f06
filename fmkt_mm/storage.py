"""Files that are either complete and verified, or absent.

* :func:`atomic_write` writes into a temporary file beside the target and
  renames it over the target: a process killed while writing leaves the old
  file or the new one, never a truncated one.
* Every checkpoint written through the ``'atomic_local'`` file backend gets a
  sidecar ``NAME.sha256`` (``sha256sum`` format) written after it;
  :func:`verify_checksum` compares a file with its sidecar, so bytes changed
  on disk after the save (a flipped sector, a partial copy) are detected at
  load instead of loading a silently different tensor.
* :func:`fetch_url` downloads a checkpoint once into torch's hub cache and
  checks the hash prefix that model-zoo file names carry.
"""
import hashlib
import os
import os.path as osp
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, List, Optional, Union

import torch
from mmengine.fileio import LocalBackend, register_backend

#: suffix of the checksum file written beside each checkpoint
CHECKSUM_SUFFIX = '.sha256'
#: suffix of :func:`atomic_write`'s temporary files (``.NAME.<random>.tmp``)
TMP_SUFFIX = '.tmp'
_CHUNK = 1 << 20


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is truncated, unreadable or differs from its checksum."""


class WriteFailedError(OSError):
    """Writing a file failed (a full disk, a quota, a lost mount); the
    message names the file and what is left of it. ``errno`` is the cause's."""


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
    existed = osp.isfile(path)
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path) + '.', suffix=TMP_SUFFIX, dir=directory)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # what open() would have given the file
        with os.fdopen(fd, 'wb') as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if osp.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError) and not isinstance(err, WriteFailedError):
            kept = ('keeps its previous content' if existed else 'was not created')
            raise WriteFailedError(
                err.errno, f'writing {path!r} failed ({err.strerror or err}): nothing was replaced, '
                f'{osp.basename(path)!r} {kept}, and the partial temporary file was removed. Free '
                f'space in {directory!r} (or fix the cause) and run again; a training resumes from its '
                f'last complete checkpoint with --resume') from err
        raise
    _fsync_directory(directory)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (where the OS allows it)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f))


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_path(path: str) -> str:
    return str(path) + CHECKSUM_SUFFIX


def write_checksum(path: str, digest: Optional[str] = None) -> str:
    """Write ``path``'s sidecar checksum (``digest`` if already known)."""
    digest = digest or sha256_of(path)
    atomic_write(checksum_path(path), f'{digest}  {osp.basename(path)}\n'.encode())
    return digest


def verify_checksum(path: str) -> bool:
    """Compare ``path`` with its sidecar checksum. Returns False when there is
    no sidecar (nothing to verify), True when it matches; raises
    :class:`CorruptCheckpointError` when it does not."""
    sidecar = checksum_path(path)
    if not osp.isfile(sidecar):
        return False
    with open(sidecar) as f:
        expected = f.read().split()[:1]
    actual = sha256_of(path)
    if expected != [actual]:
        raise CorruptCheckpointError(
            f'{path!r} does not match its checksum {sidecar!r} (sha256 {actual[:12]}... vs '
            f'{(expected or ["nothing"])[0][:12]}...): its bytes changed after it was written (disk '
            f'or copy corruption). Resume from an earlier checkpoint; if you changed the file on '
            f'purpose, delete the .sha256 file')
    return True


def seal(path: str) -> bool:
    """Write the sidecar of a checkpoint that has none, once it has loaded
    and fitted (so later loads verify its bytes); False where it cannot be
    written (a read-only folder) or already exists."""
    if osp.isfile(checksum_path(path)) or not osp.isfile(path):
        return False
    try:
        write_checksum(path)
    except OSError:
        return False
    return True


def remove_with_checksum(path: str) -> None:
    for name in (path, checksum_path(path)):
        if osp.isfile(name):
            os.remove(name)


#: a temporary file of :func:`atomic_write`: ``.NAME.<random>.tmp``
_TMP_FILE = re.compile(r'^\..+\.[A-Za-z0-9_]{8}' + re.escape(TMP_SUFFIX) + '$')


def remove_leftovers(folder: str) -> List[str]:
    """Remove what interrupted writes left in ``folder``: the temporary
    files of saves that were killed, and sidecars whose checkpoint is gone.
    Call it only while no other process writes there (a training holds the
    work dir's lock). Returns the names removed."""
    removed = []
    if not osp.isdir(folder):
        return removed
    names = set(os.listdir(folder))
    for name in sorted(names):
        orphan = name.endswith(CHECKSUM_SUFFIX) and name[:-len(CHECKSUM_SUFFIX)] not in names
        if (_TMP_FILE.match(name) or orphan) and osp.isfile(osp.join(folder, name)):
            os.remove(osp.join(folder, name))
            removed.append(name)
    return removed


@register_backend('atomic_local', force=True)
class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend with atomic ``put`` / ``put_text``;
    ``put`` (how MMEngine writes checkpoints) also writes the file's sha256
    sidecar, from the bytes in memory.

    Checkpoints are written with it when the checkpoint hook says
    ``backend_args=dict(backend='atomic_local')``, which
    :class:`fmkt_mm.DistillRunner` sets for local work directories.
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write(str(filepath), obj)
        write_checksum(str(filepath), hashlib.sha256(obj).hexdigest())

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        atomic_write(str(filepath), obj.encode(encoding))

    def remove(self, filepath: Union[str, Path]) -> None:
        """Remove a file and its sidecar (MMEngine's hook removes checkpoints
        beyond ``max_keep_ckpts`` through here when a run resumes)."""
        remove_with_checksum(str(filepath))


# -- checkpoints by URL ------------------------------------------------------------------

#: ``name-<hash prefix>.pth``: OpenMMLab's model-zoo files carry the first
#: hex digits of their sha256 (as torch.hub's ``check_hash`` reads them)
_HASH_PREFIX = re.compile(r'-([a-f0-9]{6,})\.[^./]+$')


def is_url(path: Any) -> bool:
    return isinstance(path, str) and path.startswith(('http://', 'https://'))


def fetch_url(url: str, what: str = 'checkpoint', progress: bool = False) -> str:
    """The local path of the file at ``url``, downloaded once into torch's
    hub cache (``$TORCH_HOME/hub/checkpoints``, as ``torch.hub`` and
    MMEngine cache model-zoo weights). When the file name carries a hash
    prefix (``retinanet_..._20200130-366f5af1.pth``) the download is checked
    against it, and so is a cached file before it is used again."""
    name = osp.basename(url.split('?', 1)[0].split('#', 1)[0])
    if not name:
        raise ValueError(f'{what} URL {url!r} names no file')
    directory = osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(directory, exist_ok=True)
    path = osp.join(directory, name)
    match = _HASH_PREFIX.search(name)
    prefix = match.group(1) if match else None
    if osp.isfile(path):
        if prefix is None or sha256_of(path).startswith(prefix):
            return path
        os.remove(path)  # a cached file that is not what the name promises: fetch again
    try:
        torch.hub.download_url_to_file(url, path, hash_prefix=prefix, progress=progress)
    except RuntimeError as err:  # torch.hub's hash check
        raise CorruptCheckpointError(f'{what} downloaded from {url!r} does not match the hash '
                                     f'prefix {prefix!r} of its name: {err}') from None
    except OSError as err:
        raise FileNotFoundError(f'cannot download {what} {url!r}: {err}. Check the URL and the '
                                f'network, or download it yourself and give the local path') from None
    return path
