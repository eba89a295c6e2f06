"""One experiment harness for the demos, the benchmarks and the tests.

Every experiment on the shipped configs takes the same steps, each written
once here:

* :func:`load` a shipped config (a path, or one relative to ``configs/``);
* shrink its schedule: :func:`shrink_classification` (epochs, samples,
  seed) or :func:`point_detection` (a composed set's root, epochs);
* :func:`set_teacher` checkpoint, then :func:`finalize` (the distiller
  applied, the work dir prepared as ``tools/train.py`` prepares it);
* :func:`train_and_test` it, which returns a :class:`Run` (test metrics,
  training time, the logged scalars, read back with :meth:`Run.by_steps`);
* :func:`save_weights` of a trained teacher.
"""
import os.path as osp
import re
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Union

from mmengine.config import Config
from mmengine.runner import Runner

from .apis import apply_distiller, build_runner, make_reproducible, prepare_work_dir
from .console import quiet_run
from .export import atomic_torch_save

if TYPE_CHECKING:
    from torch import nn

#: the shipped configs (the repository's ``configs/``)
CONFIG_ROOT = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs')


def load(config: str) -> Config:
    """A config by path, or relative to :data:`CONFIG_ROOT`
    (``'fashion_mnist/teacher_resnet18_w16.py'``)."""
    path = config if osp.isfile(config) else osp.join(CONFIG_ROOT, config)
    if not osp.isfile(path):
        raise FileNotFoundError(f'no config {config!r} (nor {path!r})')
    cfg = Config.fromfile(path)
    cfg.experiment_name = unique_name(path)
    return cfg


def unique_name(config: str) -> str:
    """An experiment name no other runner of this process has: runners that
    share a name share MMEngine's logger and visualizer instances."""
    return f'{osp.splitext(osp.basename(config))[0]}-{uuid.uuid4().hex[:8]}'


def shrink_classification(cfg: Config, epochs: int, train_samples: Optional[int] = None,
                          test_samples: Optional[int] = None, seed: Optional[int] = None,
                          batch_size: Optional[int] = None, log_interval: int = 50) -> Config:
    """A Fashion-MNIST config on ``train_samples`` images for ``epochs``
    epochs, a cosine schedule over them, validated once at the end; with
    ``test_samples`` the test set is that subset of the validation set;
    ``seed`` seeds the run and the training subset."""
    cfg.train_cfg.max_epochs = cfg.train_cfg.val_interval = epochs
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=True, T_max=epochs,
                                convert_to_iter_based=True)]
    if train_samples is not None:
        cfg.train_dataloader.dataset.num_samples = train_samples
    if batch_size is not None:
        cfg.train_dataloader.batch_size = batch_size
    if test_samples:
        cfg.val_dataloader.dataset.num_samples = test_samples
        cfg.test_dataloader = cfg.val_dataloader
    if seed is not None:
        cfg.train_dataloader.dataset.seed = seed
        make_reproducible(cfg, seed)
    cfg.default_hooks.logger.interval = log_interval
    return cfg


def point_detection(cfg: Config, data_root: str, epochs: int) -> Config:
    """A composed-set detection config pointed at ``data_root`` (as
    :func:`fmkt_mm.datasets.make_detection_set` writes it), ``epochs`` long."""
    root = data_root.rstrip('/') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = root + 'annotations/instances_val.json'
    cfg.train_cfg.max_epochs = cfg.train_cfg.val_interval = epochs
    for scheduler in cfg.param_scheduler:
        if scheduler.type == 'CosineAnnealingLR':
            scheduler.end = scheduler.T_max = epochs
    return cfg


def set_teacher(cfg: Config, checkpoint: Union[None, str, Sequence[Optional[str]]]) -> Config:
    """Point a distillation config's teacher at ``checkpoint``, or its
    ``teachers`` at a list of checkpoints, one per teacher in order (configs
    without a teacher, plain or online, are left as they are)."""
    if 'distiller' not in cfg:
        return cfg
    if cfg.distiller.get('teachers') is not None:
        entries = cfg.distiller.teachers
        if isinstance(checkpoint, str) or checkpoint is None or len(checkpoint) != len(entries):
            raise ValueError(f'the config has {len(entries)} teachers: give one checkpoint each, '
                             f'got {checkpoint!r}')
        for entry, path in zip(entries, checkpoint):
            entry.checkpoint = path
    elif cfg.distiller.get('teacher') is not None:
        if not (checkpoint is None or isinstance(checkpoint, str)):
            raise ValueError(f'the config has one teacher: give one checkpoint, got {checkpoint!r}')
        cfg.distiller.teacher.checkpoint = checkpoint
    return cfg


def finalize(cfg: Config, config: str, work_dir: str) -> Config:
    """Apply the distiller and prepare ``work_dir`` as ``tools/train.py`` does."""
    apply_distiller(cfg)
    prepare_work_dir(cfg, config, work_dir)
    return cfg


@dataclass
class Run:
    """A trained and tested run: its runner, test metrics and training time."""
    runner: Runner
    metrics: Dict[str, float]
    seconds: float

    @property
    def model(self) -> 'nn.Module':
        return self.runner.model

    @property
    def iters(self) -> int:
        return int(self.runner.iter)

    @property
    def scalars(self) -> Dict[str, float]:
        """The current value of every logged scalar."""
        return {k: v.current() for k, v in self.runner.message_hub.log_scalars.items()}

    def by_steps(self, prefix: str) -> Dict[int, float]:
        """``{N: value}`` of the scalars ``f'{prefix}{N}'`` (e.g. prefix
        ``'test/flow/top1_steps'`` for the flow ensemble by step count)."""
        pattern = re.compile(re.escape(prefix) + r'(\d+)')
        return {int(m.group(1)): float(v) for k, v in self.scalars.items()
                for m in [pattern.fullmatch(k)] if m}

    def tail_mean(self, key: str, fraction: float = 0.25) -> Dict[int, float]:
        """``{k: mean}`` of the logged series ``f'{key}{k}'`` over the last
        ``fraction`` of training (``key='train/flow_step'``: each step's loss)."""
        pattern = re.compile(re.escape(key) + r'(\d+)')
        out = {}
        for name, buffer in self.runner.message_hub.log_scalars.items():
            match = pattern.fullmatch(name)
            if match:
                values = buffer.data[0]
                tail = values[-max(1, int(len(values) * fraction)):]
                out[int(match.group(1))] = float(sum(tail) / len(tail))
        return out

    def seconds_per_iter(self) -> float:
        """Mean logged training iteration time, without the first (warm-up) one."""
        times = [float(t) for t in self.runner.message_hub.get_scalar('train/time').data[0]]
        return sum(times[1:]) / (len(times) - 1) if len(times) > 1 else times[0]


def train_and_test(cfg: Config, name: Optional[str] = None, test: bool = True) -> Run:
    """Train a finalized ``cfg`` in this process, then test it. With a
    ``name``, the console shows one progress line and the run's output goes
    to its work dir (:func:`fmkt_mm.console.quiet_run`)."""
    with (quiet_run(name, cfg.work_dir) if name else nullcontext(lambda runner: None)) as attach:
        runner = build_runner(cfg)
        attach(runner)
        start = time.time()
        runner.train()
        seconds = time.time() - start
        metrics = runner.test() if test else {}
    return Run(runner, dict(metrics or {}), seconds)


def save_weights(run: Run, path: str) -> str:
    """The trained model's weights at ``path``, written atomically (a teacher)."""
    atomic_torch_save(run.model.state_dict(), path)
    return path
