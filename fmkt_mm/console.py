"""One line of console progress per run; the full MMEngine logs go to files.

A demo trains several models in one process; MMEngine prints an environment
dump, a hook table and a log line every interval for each of them. Inside
:func:`quiet_run`, everything a run writes to stdout (MMEngine's console
handler, pycocotools' summaries) goes to ``WORK_DIR/console.log`` instead
(MMEngine's own log file is written as usual), and one line on the terminal
shows the run's progress: epoch, loss, time left. Warnings still reach stderr.
"""
import datetime
import os
import os.path as osp
import sys
import time
from contextlib import contextmanager, redirect_stdout
from typing import TYPE_CHECKING, Callable, Iterator, Optional, TextIO

from mmengine.hooks import Hook
from mmengine.hooks.hook import DATA_BATCH

if TYPE_CHECKING:
    from mmengine.runner import Runner

__all__ = ['ConsoleProgressHook', 'quiet_run']


class ConsoleProgressHook(Hook):
    """Writes ``name: epoch 2/6  iter 310/930  loss 0.412  left 0:01:05`` to
    the real terminal, updated in place (every iteration on a terminal, once
    per epoch otherwise)."""

    priority = 'LOWEST'

    def __init__(self, name: str, stream: Optional[TextIO] = None, log: str = '') -> None:
        self.name, self.log, self.finished = name, log, False
        self.stream = stream or sys.__stdout__
        self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
        self._start = None
        self._line = ''

    def before_train(self, runner: 'Runner') -> None:
        self._start, self._first_iter = time.time(), runner.iter

    def _show(self, runner, final=False):
        done, total = runner.iter, max(runner.max_iters, 1)
        elapsed = time.time() - self._start
        rate = elapsed / max(done - self._first_iter, 1)
        left = datetime.timedelta(seconds=int(rate * (total - done)))
        loss = runner.message_hub.log_scalars.get('train/loss')
        loss = f'  loss {loss.mean(20):.4f}' if loss is not None else ''
        epoch = f'epoch {runner.epoch + (0 if final else 1)}/{runner.max_epochs}  ' \
            if runner.max_epochs else ''
        self._line = f'{self.name}: {epoch}iter {done}/{total}{loss}  left {left}'
        if self.tty:
            self.stream.write('\r' + self._line.ljust(79))
            self.stream.flush()

    def after_train_iter(self, runner: 'Runner', batch_idx: int, data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        if self.tty:
            self._show(runner)

    def after_train_epoch(self, runner: 'Runner') -> None:
        if not self.tty:
            self._show(runner)

    def after_train(self, runner: 'Runner') -> None:
        self._show(runner, final=True)
        seconds = time.time() - self._start
        logs = f'  logs: {self.log}' if self.log else ''
        self.stream.write(('\r' if self.tty else '') +
                          f'{self._line}  trained in {seconds:.0f} s{logs}'.ljust(79) + '\n')
        self.stream.flush()
        self.finished = True


@contextmanager
def quiet_run(name: str, work_dir: str) -> Iterator[Callable[['Runner'], None]]:
    """``with quiet_run('teacher', work_dir) as attach: runner = Runner.from_cfg(cfg);
    attach(runner); runner.train()``: the run's stdout goes to
    ``work_dir/console.log``, and ``attach`` adds the one-line progress."""
    os.makedirs(work_dir, exist_ok=True)
    log = osp.join(work_dir, 'console.log')
    hook = ConsoleProgressHook(name, log=log)
    with open(log, 'a') as f, redirect_stdout(f):
        yield lambda runner: runner.register_hook(hook)
    if not hook.finished:  # a test-only run
        sys.__stdout__.write(f'{name}: logs: {log}\n')
        sys.__stdout__.flush()
