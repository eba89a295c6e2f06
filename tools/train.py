"""Train a model (a distiller or a stock OpenMMLab model) with fmkt_mm's runner.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
                          [--seed N] [--deterministic] [--cfg-options k=v ...]
                          [--allow-unsafe-pickle] [--allow-partial-load]
                          [--launcher none|pytorch|slurm|mpi]

mmdet's and mmpretrain's own tools/train.py (and ``mim train``) run the same
configs the same way: every fmkt_mm config names ``runner_type =
'fmkt_mm.DistillRunner'``. This one adds ``--seed``/``--deterministic`` and
the checkpoint opt-ins as flags.
"""
import argparse
import os

from mmengine.config import Config, DictAction

from fmkt_mm.apis import build_runner, make_reproducible, tool_config
from fmkt_mm.launch import shutdown_process_group

UNSAFE_HELP = ('let the checkpoint given here (or as load_from) be read with full unpickling, which '
               'can execute code: only for files you trust. Without it such files are refused; '
               'checkpoints written by these tools never need it')
PARTIAL_HELP = ('load what fits of a load_from/--resume checkpoint that does not fit the model '
                '(MMEngine\'s lenient loading); without it such a checkpoint is refused with the '
                'missing and unexpected keys')


def parse_args():
    parser = argparse.ArgumentParser(description='Train with knowledge transfer by flow matching')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or from the latest complete one in '
                             'the work dir when no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: fp16 on GPU, bf16 on CPU')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the actual batch size over '
                             'auto_scale_lr.base_batch_size (as mmdet\'s --auto-scale-lr)')
    parser.add_argument('--seed', type=int, help="the run's random seed (config: randomness.seed)")
    parser.add_argument('--deterministic', action='store_true',
                        help='deterministic algorithms where torch has them (operators without one '
                             'warn): the same seed in the same environment trains to the same '
                             'weights')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value')
    parser.add_argument('--allow-unsafe-pickle', action='store_true', help=UNSAFE_HELP)
    parser.add_argument('--allow-partial-load', action='store_true', help=PARTIAL_HELP)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def enable_auto_scale_lr(cfg: Config) -> Config:
    scale = cfg.get('auto_scale_lr')
    if not scale or 'base_batch_size' not in scale:
        raise ValueError('--auto-scale-lr needs auto_scale_lr = dict(enable=False, base_batch_size=N) in '
                         'the config: N is the total batch size its learning rate was set for')
    scale.enable = True
    return cfg


def main():
    args = parse_args()
    cfg = tool_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    if args.deterministic or args.seed is not None:
        make_reproducible(cfg, args.seed, deterministic=args.deterministic)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'  # bf16 autocast on a CPU (DistillRunner)
    if args.auto_scale_lr:
        enable_auto_scale_lr(cfg)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.allow_unsafe_pickle:
        cfg.allow_unsafe_pickle = True
    if args.allow_partial_load:
        cfg.allow_partial_load = True
    runner = build_runner(cfg)
    runner.train()
    del runner  # free the DDP wrapper, which holds the process group, before closing it
    shutdown_process_group()


if __name__ == '__main__':
    main()
