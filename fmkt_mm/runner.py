"""The runner every fmkt_mm config names: the same run under every launcher.

A config says ``runner_type = 'fmkt_mm.DistillRunner'``; mmdet's and
mmpretrain's own ``tools/train.py`` / ``tools/test.py`` (what ``mim train``
and ``mim test`` run, and their ``dist_train.sh``) then build this runner
with ``RUNNERS.build(cfg)``, exactly as the project's tools do. It is
MMEngine's ``Runner`` plus what a distillation needs and a long training
should get:

* the config's ``distiller`` block becomes the model (never a plain student
  trained in its place), with its log processor;
* on a CPU, ``--launcher pytorch/slurm/mpi`` runs over gloo;
* checkpoints: written atomically with a sha256 sidecar, rotated only after
  the new one is verified (:class:`~fmkt_mm.hooks.DurableCheckpointHook`),
  loadable with ``weights_only=True``; a checkpoint loaded by ``load_from``,
  ``--resume`` or for testing must fit the model (no silently partial load;
  ``allow_partial_load=True`` keeps MMEngine's lenient loading); auto-resume
  falls back to the newest complete checkpoint; full unpickling only with
  ``allow_unsafe_pickle=True``;
* one training per work dir (:class:`~fmkt_mm.work_dir.WorkDirLock`), and a
  run that fails before training or testing starts leaves the work dir as it
  found it.
"""
import atexit
import copy
import os
import os.path as osp
import re
from contextlib import nullcontext
from typing import Any, Callable, List, Optional, Union

import torch
from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from .checkpoint import CheckpointMismatchError, extract_state_dict, safe_torch_load
from .config_prep import prepare_config, teacher_from_checkpoint
from .launch import destroy_process_group
from .registry import RUNNERS
from .runner_guard import guard_runners
from .state_fit import check_fit, refuse_older_layout
from .storage import CorruptCheckpointError, remove_leftovers, seal
from .work_dir import WorkDirLock, WorkDirLockedError, WorkDirSnapshot

#: the checkpoints a CheckpointHook names by step
_STEP_FILE = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


@RUNNERS.register_module()
class DistillRunner(Runner):
    """MMEngine's ``Runner`` for fmkt_mm configs (see the module docstring).

    Config keys it reads besides MMEngine's: ``distiller`` (the distiller
    block), ``allow_unsafe_pickle`` (full unpickling of ``load_from`` /
    ``--resume`` / the tested checkpoint), ``allow_partial_load`` (load what
    fits of a checkpoint that does not fit, as MMEngine does by default).
    """

    _snapshot: Optional[WorkDirSnapshot] = None
    _role = 'train'
    _resuming = False
    #: ``(path, checkpoint)`` read while building the run, loaded by the first
    #: :meth:`load_checkpoint` of that path instead of reading it again
    _preloaded: Optional[tuple] = None

    @classmethod
    def from_cfg(cls, cfg: Config) -> 'DistillRunner':
        cfg = copy.deepcopy(cfg)
        prepare_config(cfg)
        preloaded = teacher_from_checkpoint(cfg, cfg.load_from) if cfg.get('load_from') else None
        config_copy = osp.basename(cfg.filename) if getattr(cfg, 'filename', None) else None
        snapshot = WorkDirSnapshot(cfg.work_dir, keep=[config_copy] if config_copy else [])
        with snapshot.restore_on_failure():
            runner = super().from_cfg(cfg)
        runner._snapshot = snapshot
        close_process_group_at_exit()
        if preloaded is not None:
            runner._preloaded = (cfg.load_from, preloaded)
            runner.logger.info(f"the teacher's weights come from {cfg.load_from} (its own file is not "
                               f'needed), loaded strictly with the rest of the model')
        if (cfg.get('randomness') or {}).get('deterministic'):
            # MMEngine makes torch raise on every operator without a deterministic
            # implementation (some GPU backward passes), which can stop a training;
            # here such an operator warns, naming itself, and the run goes on
            torch.use_deterministic_algorithms(True, warn_only=True)
        return runner

    # -- training and testing ----------------------------------------------------------------
    def train(self) -> torch.nn.Module:
        self._role = 'train'
        lock = None
        if is_main_process():
            try:
                lock = WorkDirLock.acquire(self.work_dir)
            except WorkDirLockedError:
                # another run owns the work dir and may be writing to it: remove only
                # what this run wrote (its log folder) and put back the config copy
                if self._snapshot is not None:
                    self._snapshot.restore(only=[self.log_dir])
                raise
            removed = remove_leftovers(self.work_dir)  # the lock is ours: nobody else writes here
            if removed:
                self.logger.info(f'removed what interrupted saves left in {self.work_dir}: '
                                 + ', '.join(removed))
        try:
            return super().train()
        finally:
            if lock is not None:
                lock.release()

    def test(self) -> dict:
        self._role = 'test'
        metrics = super().test()
        empty = empty_detection_result(self.cfg, self.test_evaluator, metrics)
        if empty:
            self.logger.warning(empty)
        return metrics

    def resume(self, filename: str, *args: Any, **kwargs: Any) -> None:
        self._resuming = True
        try:
            super().resume(filename, *args, **kwargs)
        finally:
            self._resuming = False

    def load_or_resume(self) -> None:
        """MMEngine's, with auto-resume falling back to the newest complete
        checkpoint, and the work dir restored when loading fails."""
        if self._has_loaded:
            return
        with self._restore_on_failure():
            if self._resume and self._load_from is None:
                self._resume_newest_good()
            else:
                super().load_or_resume()

    def _restore_on_failure(self):
        return self._snapshot.restore_on_failure() if self._snapshot is not None else nullcontext()

    def _resume_newest_good(self) -> None:
        candidates = checkpoint_candidates(self.work_dir)
        if not candidates:
            self.logger.info(f'no checkpoint to resume in {self.work_dir}: training from the start')
            return
        skipped = []
        for path in candidates:
            try:
                self.resume(path)
            except (CorruptCheckpointError, FileNotFoundError) as err:
                skipped.append(f'{path}: {err}')
                continue
            if skipped:
                self.logger.warning('resumed from ' + path + ', the newest complete checkpoint; '
                                    'skipped:\n  ' + '\n  '.join(skipped))
            else:
                self.logger.info(f'auto-resumed from the latest checkpoint {path}')
            return
        raise CorruptCheckpointError(f'no checkpoint in {self.work_dir!r} can be resumed:\n  ' +
                                     '\n  '.join(skipped))

    # -- loading -----------------------------------------------------------------------------
    def load_checkpoint(self, filename: str, map_location: Union[str, Callable] = 'cpu', strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]) -> dict:  # noqa: B006 (MMEngine's signature)
        """MMEngine's ``load_checkpoint`` through the safe loader, refusing a
        checkpoint that leaves model tensors unloaded (unless the config says
        ``allow_partial_load=True``)."""
        if self._preloaded is not None and self._preloaded[0] == filename:
            checkpoint, self._preloaded = self._preloaded[1], None
        else:
            checkpoint = safe_torch_load(filename, map_location=map_location,
                                         allow_unsafe_pickle=bool(self.cfg.get('allow_unsafe_pickle')),
                                         what='checkpoint', role=self._role)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        state = _revised(extract_state_dict(checkpoint), revise_keys)
        if self._resuming and checkpoint.get('optimizer') is not None:
            refuse_older_layout(model, state, filename)
        problems = check_fit(model, state, what=f'checkpoint {filename!r}',
                             lenient=bool(self.cfg.get('allow_partial_load')),
                             plain_student_ok=self._role == 'train' and not self._resuming)
        if problems:
            self.logger.warning(f'checkpoint {filename} loaded partially (allow_partial_load=True):\n  ' +
                                '\n  '.join(problems))
        checkpoint = _load_checkpoint_to_model(model, checkpoint, strict, revise_keys=revise_keys)
        if self._resuming and not problems and is_main_process():
            seal(filename)  # from now on its bytes are verified at every load
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint


_CLOSING_AT_EXIT = False


def close_process_group_at_exit() -> None:
    """Destroy the default process group when the interpreter exits (once per
    process, where one is initialised), before the process tears down its
    threads: a gloo group left alive can abort a finished run's exit
    ('terminate called without an active exception', SIGABRT) and turn a
    successful multi-process training into a failed command."""
    global _CLOSING_AT_EXIT
    dist = torch.distributed
    if _CLOSING_AT_EXIT or not (dist.is_available() and dist.is_initialized()):
        return
    _CLOSING_AT_EXIT = True
    atexit.register(destroy_process_group)


def empty_detection_result(cfg: Config, evaluator: Any, metrics: Optional[dict]) -> Optional[str]:
    """What it means when a COCO evaluation returned no mAP (mmdet's
    "The testing results of the whole dataset is empty"): no box passed the
    score threshold, and how to score anyway; None when mAP was scored."""
    names = [type(metric).__name__ for metric in getattr(evaluator, 'metrics', [])]
    if 'CocoMetric' not in names or any(key.endswith('_mAP') for key in (metrics or {})):
        return None
    test_cfg = (cfg.get('model') or {}).get('student', cfg.get('model') or {}).get('test_cfg') or {}
    key, threshold = 'model.test_cfg.score_thr', test_cfg.get('score_thr')
    if threshold is None and isinstance(test_cfg.get('rcnn'), dict):
        key, threshold = 'model.test_cfg.rcnn.score_thr', test_cfg['rcnn'].get('score_thr')
    return (f'no COCO mAP: no predicted box passed the score threshold ({key} = {threshold}), so '
            f'there is nothing to score. This is what an undertrained detector (a short run) gives, '
            f'not a failure of the test. To score it anyway, lower the threshold: --cfg-options '
            f'{key}=0.0')


def _revised(state: dict, revise_keys) -> dict:
    for pattern, replacement in revise_keys:
        state = {re.sub(pattern, replacement, key): value for key, value in state.items()}
    return state


def checkpoint_candidates(work_dir: str) -> List[str]:
    """The checkpoints a resume may start from, newest first: the one
    ``last_checkpoint`` names, then every ``epoch_N.pth`` / ``iter_N.pth``
    beside it by decreasing N.

    A work dir stands alone: ``last_checkpoint`` holds the absolute path
    MMEngine wrote, so a name whose file is in ``work_dir`` itself is taken
    from there (a copied or moved work dir resumes from its own files, never
    from the folder it was copied from); only a checkpoint that is not in
    ``work_dir`` (a checkpoint hook's ``out_dir``) is taken where it is named."""
    named = None
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip() or None
    if named and osp.isfile(osp.join(work_dir, osp.basename(named))):
        named = osp.join(work_dir, osp.basename(named))
    folders = {osp.abspath(work_dir)} | ({osp.dirname(osp.abspath(named))} if named else set())
    found = []
    for folder in folders:
        if osp.isdir(folder):
            for name in os.listdir(folder):
                match = _STEP_FILE.match(name)
                if match:
                    found.append((int(match.group(2)), osp.join(folder, name)))
    ordered = [path for _, path in sorted(found, reverse=True)]
    if named:
        ordered = [named] + [p for p in ordered if osp.abspath(p) != osp.abspath(named)]
    return ordered


guard_runners()  # every Runner of this process refuses an unapplied distiller block

__all__ = ['DistillRunner', 'CheckpointMismatchError', 'checkpoint_candidates']
