"""An epoch-based training loop that resumes exactly from any checkpoint."""
from typing import Any

from mmengine.runner import EpochBasedTrainLoop

from .registry import LOOPS

#: the loop as a prepared config names it
RESUMABLE_LOOP = 'fmkt_mm.ResumableEpochBasedTrainLoop'


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """MMEngine's ``EpochBasedTrainLoop`` (same arguments) that resumes from
    a checkpoint saved inside an epoch.

    MMEngine's loop restarts the epoch a checkpoint was saved in: resumed
    from ``iter_2.pth`` of a 2-iteration epoch (``CheckpointHook(by_epoch=False)``),
    it trains epoch 1 again, ends 2 iterations late, and its learning rate
    and weights differ from the uninterrupted run's. This loop replays the
    batches of that epoch already trained on (fetched and dropped, so the
    sampler order and the pipeline's random draws are those of the
    uninterrupted run, as MMEngine's iteration-based loop does), then the
    random generators are restored to their state at the checkpoint
    (:class:`~fmkt_mm.hooks.RandomStateHook`) and training goes on with the
    next batch; a checkpoint saved at the last iteration of an epoch goes on
    with that epoch's end (its hooks, the epoch-wise schedulers, validation).
    Without a resume it is MMEngine's loop. :class:`~fmkt_mm.DistillRunner`
    sets it in place of the stock loop.
    """

    @property
    def batches_to_replay(self) -> int:
        """Batches of the current epoch trained before the checkpoint."""
        return max(0, self._iter - self._epoch * len(self.dataloader))

    def run_epoch(self) -> None:
        replay = self.batches_to_replay
        if not replay:
            return super().run_epoch()
        if replay > len(self.dataloader):
            raise RuntimeError(
                f'cannot resume: the checkpoint is at iteration {self._iter}, {replay} batches into epoch '
                f'{self._epoch + 1}, but an epoch now has {len(self.dataloader)} batches (the batch size, '
                f'the dataset or the number of processes changed since it was saved). Resume with the '
                f'settings it was trained with')
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        batches = iter(self.dataloader)
        for _ in range(replay):
            next(batches)
        for hook in self.runner.hooks:
            restore = getattr(hook, 'restore_after_replay', None)
            if restore is not None:
                restore(self.runner)
        for idx, data_batch in enumerate(batches, start=replay):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1


def resumable_loop(train_cfg: Any) -> Any:
    """``train_cfg`` with MMEngine's epoch loop replaced by
    :class:`ResumableEpochBasedTrainLoop` (same arguments); any other loop
    is left as it is."""
    from mmengine.runner import EpochBasedTrainLoop as Stock

    from .config_types import is_type
    if not isinstance(train_cfg, dict) or train_cfg.get('type') is None and not train_cfg.get('by_epoch'):
        return train_cfg
    if train_cfg.get('type') is not None and not is_type(train_cfg['type'], LOOPS, Stock):
        return train_cfg
    loop = dict(train_cfg)
    loop.pop('by_epoch', None)
    loop['type'] = RESUMABLE_LOOP
    return loop
