"""Checkpoints that load with ``torch.load(weights_only=True)``."""
from typing import TYPE_CHECKING

import numpy as np
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer

from ..registry import HOOKS

if TYPE_CHECKING:
    from mmengine.runner import Runner

_MARK = '__history_buffer__'


def _plain(obj):
    """numpy scalars (e.g. the ETA in the runtime info) -> Python numbers."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


@HOOKS.register_module()
class SafeCheckpointHook(Hook):
    """Stores MMEngine's message hub as plain data so that checkpoints hold
    only tensors and plain containers.

    MMEngine pickles its ``HistoryBuffer`` objects into every checkpoint, which
    forces whoever resumes to unpickle arbitrary objects. This hook replaces
    them by plain dicts on save and rebuilds them on load (before the Runner
    restores its message hub), so resuming works with ``weights_only=True``.
    """

    priority = 'VERY_LOW'  # after every hook that writes into the checkpoint

    def before_save_checkpoint(self, runner: 'Runner', checkpoint: dict) -> None:
        for section in ('meta', 'message_hub'):
            if section in checkpoint:
                checkpoint[section] = _plain(checkpoint[section])
        scalars = checkpoint.get('message_hub', {}).get('log_scalars', {})
        for key, buffer in list(scalars.items()):
            if isinstance(buffer, HistoryBuffer):
                logs, counts = buffer.data
                scalars[key] = {_MARK: True, 'max_length': int(buffer.max_length),
                                'log_history': [float(v) for v in np.asarray(logs).ravel()],
                                'count_history': [float(v) for v in np.asarray(counts).ravel()]}

    def after_load_checkpoint(self, runner: 'Runner', checkpoint: dict) -> None:
        scalars = checkpoint.get('message_hub', {}).get('log_scalars', {})
        for key, value in list(scalars.items()):
            if isinstance(value, dict) and value.get(_MARK):
                scalars[key] = HistoryBuffer(value['log_history'], value['count_history'],
                                             value['max_length'])
