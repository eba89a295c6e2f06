"""Train a model (a distiller or a stock OpenMMLab model) with MMEngine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--allow-unsafe-pickle]
                          [--seed N] [--deterministic] [--cfg-options k=v ...]
                          [--launcher none|pytorch|slurm]
"""
import argparse
import os

from mmengine.config import Config, DictAction

from fmkt_mm.apis import (apply_distiller, build_runner, clean_up_on_failure, make_reproducible,
                          prepare_work_dir)
from fmkt_mm.checkpoint import trust_file
from fmkt_mm.launch import setup_launcher, shutdown_process_group
from fmkt_mm.optim import enable_amp


def parse_args():
    parser = argparse.ArgumentParser(description='Train with knowledge transfer by flow matching')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or from the latest one in the '
                             'work dir when no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: fp16 on GPU, bf16 on CPU')
    parser.add_argument('--seed', type=int, help="the run's random seed (config: randomness.seed)")
    parser.add_argument('--deterministic', action='store_true',
                        help='deterministic algorithms where torch has them (operators without one '
                             'warn): the same seed in the same environment trains to the same '
                             'weights')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value')
    parser.add_argument('--allow-unsafe-pickle', action='store_true',
                        help='let the checkpoint given here (or as load_from) be read with full '
                             'unpickling, which can execute code: only for files you trust. '
                             'Without it such files are refused; checkpoints written by these '
                             'tools never need it')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    apply_distiller(cfg)
    if args.deterministic or args.seed is not None:
        make_reproducible(cfg, args.seed, deterministic=args.deterministic)
    setup_launcher(cfg, args.launcher)
    work_dir = prepare_work_dir(cfg, args.config, args.work_dir)
    if args.amp:
        enable_amp(cfg)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.allow_unsafe_pickle and cfg.get('load_from'):
        trust_file(cfg.load_from)
    with clean_up_on_failure(work_dir):
        runner = build_runner(cfg)
    runner.train()
    shutdown_process_group()


if __name__ == '__main__':
    main()
