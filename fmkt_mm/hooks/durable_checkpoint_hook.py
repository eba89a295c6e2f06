"""Checkpoint rotation that never costs the last good checkpoint."""
import os
import os.path as osp
import re
from typing import List

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

from ..registry import HOOKS
from ..storage import atomic_write, remove_with_checksum, verify_checksum


@HOOKS.register_module()
class DurableCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook`` (same arguments) whose rotation writes
    and verifies the new checkpoint before it deletes the oldest.

    MMEngine's hook deletes the checkpoint beyond ``max_keep_ckpts`` first
    and then writes the new one, so with ``max_keep_ckpts=1`` a process
    killed (or a disk filled) during the save leaves no checkpoint at all.
    Here the order is: write the new file (atomically, with its sha256
    sidecar, through the ``'atomic_local'`` backend), verify it against the
    sidecar, point ``last_checkpoint`` at it (atomically), and only then
    delete the oldest. At any moment ``last_checkpoint`` names a complete,
    verified file. The kept set is the new checkpoint and the newest
    ``max_keep_ckpts - 1`` of those before it that ``out_dir`` holds under
    the hook's file name template, whoever wrote them (so a resumed run, or
    one that lowered ``max_keep_ckpts``, keeps exactly that many); each is
    deleted with its sidecar. Checkpoints of a later step (another run's)
    are left alone. :class:`~fmkt_mm.DistillRunner` sets it in place of the
    stock hook for local work directories.
    """

    def _save_checkpoint_with_step(self, runner, step, meta):
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(self.out_dir, ckpt_filename, self.file_client_args,
                               save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta,
                               by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        verify_checksum(self.last_ckpt)  # raises on a file that is not what was written
        atomic_write(osp.join(runner.work_dir, 'last_checkpoint'), str(self.last_ckpt).encode())
        if self.max_keep_ckpts > 0:
            earlier = [s for s in self._saved_steps() if s < step]  # later ones are another run's
            for old in earlier[:max(0, len(earlier) - (self.max_keep_ckpts - 1))]:
                remove_with_checksum(self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old)))

    def _saved_steps(self) -> List[int]:
        """The steps of the checkpoints in ``out_dir`` named by this hook's
        template, in increasing order: what ``max_keep_ckpts`` counts, whoever
        wrote them (a resumed run's predecessor, a run without sidecars)."""
        prefix, _, suffix = self.filename_tmpl.partition('{}')
        pattern = re.compile('^' + re.escape(prefix) + r'(\d+)' + re.escape(suffix) + '$')
        found = [pattern.match(name) for name in os.listdir(self.out_dir)]
        return sorted(int(match.group(1)) for match in found if match)
