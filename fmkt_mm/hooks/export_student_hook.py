"""The plain student exported beside each checkpoint."""
import os
import os.path as osp
from typing import TYPE_CHECKING, Dict, Optional

from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.hooks.hook import DATA_BATCH

from ..registry import HOOKS
from .utils import require_distiller

if TYPE_CHECKING:
    from mmengine.runner import Runner


@HOOKS.register_module()
class ExportStudentHook(Hook):
    """Write the plain student next to every checkpoint the
    ``CheckpointHook`` saves (``iter_2.pth`` -> ``iter_2_student.pth``, and
    best checkpoints alike), as ``tools/export_student.py`` does: the
    student's weights, checked by loading them strictly into the plain
    student, written atomically. Exports of checkpoints that the checkpoint
    hook has since removed (``max_keep_ckpts``) are removed too.

    With ``deploy_mode='flow'`` the export warns once that the flow is not
    part of the plain student (see :func:`fmkt_mm.export.export_student`).

    Example::

        custom_hooks = [dict(type='fmkt_mm.ExportStudentHook')]
    """

    priority = 'LOWEST'  # after the CheckpointHook (VERY_LOW) has saved

    def __init__(self, suffix: str = '_student') -> None:
        if not suffix:
            raise ValueError('suffix must be non-empty: the export must not overwrite the checkpoint')
        self.suffix = suffix
        self._done: Dict[str, str] = {}  # checkpoint -> its export
        self._warned = False

    def student_path(self, checkpoint: str) -> str:
        root, ext = osp.splitext(checkpoint)
        return root + self.suffix + (ext or '.pth')

    def before_train(self, runner: 'Runner') -> None:
        require_distiller(runner, type(self).__name__)
        # checkpoints that exist already (a resumed run) are not re-exported
        for key in ('last_ckpt', 'best_ckpt'):
            path = runner.message_hub.get_info(key)
            if path:
                self._done[path] = self.student_path(path)

    @master_only
    def _export_new(self, runner) -> None:
        from ..export import export_student_from_cfg
        for key in ('last_ckpt', 'best_ckpt'):
            path = runner.message_hub.get_info(key)
            if not path or path in self._done or not osp.isfile(path):
                continue
            out = self.student_path(path)
            summary = export_student_from_cfg(runner.cfg, path, out)
            self._done[path] = out
            runner.logger.info(f'exported the student of {osp.basename(path)} to {out} '
                               f'({summary["num_tensors"]} tensors)')
            if summary['not_exported'] and not self._warned:
                runner.logger.warning(summary['not_exported'])
                self._warned = True
        for path, out in list(self._done.items()):
            if not osp.exists(path):
                if osp.isfile(out):
                    os.remove(out)
                del self._done[path]

    def after_train_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        self._export_new(runner)

    def after_train_epoch(self, runner: 'Runner') -> None:
        self._export_new(runner)

    def after_val_epoch(self, runner: 'Runner', metrics: Optional[Dict[str, float]] = None) -> None:
        self._export_new(runner)
