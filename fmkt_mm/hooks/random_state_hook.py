"""Random states in checkpoints, so that a resumed run repeats an uninterrupted one."""
import random
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.hooks.hook import DATA_BATCH
from mmengine.runner import IterBasedTrainLoop

from ..registry import HOOKS

if TYPE_CHECKING:
    from mmengine.runner import Runner


def _rng_state() -> dict:
    state = dict(torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state['numpy'] = dict(kind=str(kind), keys=torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                          pos=int(pos), has_gauss=int(has_gauss), gauss=float(gauss))
    version, internal, gauss_next = random.getstate()
    state['python'] = dict(version=int(version), internal=list(internal), gauss_next=gauss_next)
    return state


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Store the random generators' states in every checkpoint and restore
    them when the run resumes, so that a run killed and resumed repeats the
    uninterrupted run (same seed, deterministic settings) exactly.

    MMEngine resumes weights, optimizer, schedulers and message hub, but not
    the generators: anything random in the forward pass (the flow's step
    count draw, pair decoupling, RPN/RoI samplers, mixup) would take another
    course after a resume. What is restored, and when:

    * iteration-based loops replay the data pipeline (MMEngine fetches and
      discards the batches already trained on), so NumPy's and Python's
      generators come back by themselves; torch's is restored right before
      the first resumed iteration, after the replay;
    * epoch-based loops start a fresh epoch: all three are restored before
      it; resumed inside an epoch
      (:class:`~fmkt_mm.train_loop.ResumableEpochBasedTrainLoop`), all three
      are restored once the epoch's trained batches are replayed.

    The training dataloader gets a private ``torch.Generator`` so that
    starting an epoch does not draw from torch's global generator. With
    ``randomness.diff_rank_seed=True`` each rank has its own generators and
    only rank 0's are in the checkpoint, so nothing is restored then.
    ``fmkt_mm.apis.prepare_work_dir`` (``tools/train.py``) adds this hook.
    Checkpoints stay loadable with ``torch.load(weights_only=True)``.
    """

    priority = 'HIGHEST'

    def __init__(self) -> None:
        self._pending: Optional[dict] = None

    def before_save_checkpoint(self, runner: 'Runner', checkpoint: dict) -> None:
        checkpoint['random_state'] = _rng_state()

    def after_load_checkpoint(self, runner: 'Runner', checkpoint: dict) -> None:
        if getattr(runner, '_resume', False) and 'random_state' in checkpoint:
            self._pending = checkpoint['random_state']

    def before_train(self, runner: 'Runner') -> None:
        loader = getattr(runner.train_loop, 'dataloader', None)
        if isinstance(loader, torch.utils.data.DataLoader) and loader.generator is None:
            seed = runner.seed if runner.seed is not None else 0
            loader.generator = torch.Generator().manual_seed(int(seed))
        if self._pending is None:
            return
        if runner.cfg.get('randomness', {}).get('diff_rank_seed', False) and runner.world_size > 1:
            runner.logger.warning('randomness.diff_rank_seed=True: the random states of the other '
                                  'ranks are not in the checkpoint, so they are not restored')
            self._pending = None
            return
        if getattr(runner.train_loop, 'batches_to_replay', 0):
            return  # an epoch loop resumed inside an epoch: restore_after_replay
        if not isinstance(runner.train_loop, IterBasedTrainLoop):
            self._restore(self._pending, everything=True)
            self._pending = None

    def restore_after_replay(self, runner: 'Runner') -> None:
        """Called by :class:`~fmkt_mm.train_loop.ResumableEpochBasedTrainLoop`
        once it has replayed the batches of the epoch trained before the
        checkpoint: every generator back to its state at the checkpoint."""
        if self._pending is not None:
            self._restore(self._pending, everything=True)
            self._pending = None

    def before_train_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None) -> None:
        if self._pending is not None:
            self._restore(self._pending, everything=False)
            self._pending = None

    @staticmethod
    def _restore(state: dict, everything: bool) -> None:
        torch.set_rng_state(state['torch'])
        if 'cuda' in state and torch.cuda.is_available():
            states = state['cuda']
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
        if not everything:
            return
        if 'numpy' in state:
            s = state['numpy']
            keys = np.asarray(s['keys'].numpy(), dtype=np.uint32)
            np.random.set_state((s['kind'], keys, s['pos'], s['has_gauss'], s['gauss']))
        if 'python' in state:
            s = state['python']
            random.setstate((s['version'], tuple(s['internal']), s['gauss_next']))
