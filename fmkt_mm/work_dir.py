"""A run's work directory: one training at a time, and nothing left behind by
a run that fails before it starts.

* :class:`WorkDirLock`: a lock file (pid, host, start time, command) that a
  second training in the same directory is refused by, naming the holder; a
  lock whose process is gone (on this host) is taken over with a warning.
* :class:`WorkDirSnapshot`: what the directory held before a run was built,
  so that a run failing during set-up (a bad config, a checkpoint refused at
  resume or ``load_from``, a held lock) removes what it added and puts back
  the config copy it overwrote.
"""
import json
import os
import os.path as osp
import shutil
import socket
import sys
import time
import warnings
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, Optional, Sequence

#: the lock file's name inside the work dir
LOCK_NAME = '.run.lock'


class WorkDirLockedError(RuntimeError):
    """Another run trains in this work dir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WorkDirLock:
    """The lock of a training run on ``work_dir`` (take it with :meth:`acquire`)."""

    def __init__(self, path: str, holder: Dict[str, object]) -> None:
        self.path, self.holder = path, holder

    @classmethod
    def acquire(cls, work_dir: str) -> 'WorkDirLock':
        """Take the lock, or raise :class:`WorkDirLockedError` naming the run
        that holds it. A lock left by a process that no longer exists on this
        host (killed, out of memory) is taken over with a warning."""
        os.makedirs(work_dir, exist_ok=True)
        path = osp.join(work_dir, LOCK_NAME)
        me = dict(pid=os.getpid(), host=socket.gethostname(), started=time.strftime('%Y-%m-%d %H:%M:%S'),
                  command=' '.join(sys.argv))
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                cls._take_over_if_stale(path, work_dir)
                continue
            with os.fdopen(fd, 'w') as f:
                json.dump(me, f)
            return cls(path, me)
        raise WorkDirLockedError(f'could not take the lock {path!r}: another run took it meanwhile')

    @staticmethod
    def _take_over_if_stale(path: str, work_dir: str) -> None:
        holder = _read(path)
        pid, host = holder.get('pid'), holder.get('host')
        same_host = host == socket.gethostname()
        if isinstance(pid, int) and same_host and (not _alive(pid) or pid == os.getpid()):
            warnings.warn(f'taking over the lock of work dir {work_dir!r} from a run that is gone '
                          f'(pid {pid}, started {holder.get("started")})')
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            return
        where = f'pid {pid} on {host}' if holder else 'an unreadable lock file'
        gone = ('' if same_host and holder else
                f' If that run is gone (another machine cannot be checked from here), delete {path!r}.')
        raise WorkDirLockedError(
            f'work dir {work_dir!r} is in use by another training: {where}, started '
            f'{holder.get("started", "?")} ({holder.get("command", "?")}). Two runs in one work dir mix '
            f'their checkpoints and logs: wait for it to finish, or give this run another --work-dir.'
            f'{gone}')

    def release(self) -> None:
        if _read(self.path).get('pid') == self.holder['pid']:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _bytes(path: str) -> Optional[bytes]:
    if not osp.isfile(path):
        return None
    with open(path, 'rb') as f:
        return f.read()


class WorkDirSnapshot:
    """The entries of ``work_dir`` (and the bytes of the files in ``keep``,
    e.g. the config copy a Runner writes) at construction, to
    :meth:`restore` after a failed start."""

    def __init__(self, work_dir: str, keep: Iterable[str] = ()) -> None:
        self.work_dir = osp.abspath(work_dir)
        self.existed = osp.isdir(self.work_dir)
        self.entries = set(os.listdir(self.work_dir)) if self.existed else set()
        self.contents: Dict[str, Optional[bytes]] = {}
        for name in keep:
            path = osp.join(self.work_dir, name)
            self.contents[name] = _bytes(path)

    def restore(self, only: Optional[Sequence[str]] = None) -> None:
        """Remove what appeared since the snapshot (the whole directory if it
        did not exist), and put back the kept files' earlier content. With
        ``only`` (paths in the work dir), remove just those of the new
        entries: what this run wrote, when another run may be writing too."""
        if not osp.isdir(self.work_dir):
            return
        if not self.existed and only is None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            return
        new = set(os.listdir(self.work_dir)) - self.entries
        if only is not None:
            new &= {osp.relpath(osp.abspath(path), self.work_dir).split(os.sep)[0] for path in only}
        for name in new:
            path = osp.join(self.work_dir, name)
            shutil.rmtree(path, ignore_errors=True) if osp.isdir(path) else os.remove(path)
        for name, content in self.contents.items():
            path = osp.join(self.work_dir, name)
            if content is not None and _bytes(path) != content:
                with open(path, 'wb') as f:
                    f.write(content)

    @contextmanager
    def restore_on_failure(self) -> Iterator['WorkDirSnapshot']:
        try:
            yield self
        except BaseException:
            self.restore()
            raise
