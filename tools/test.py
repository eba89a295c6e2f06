"""Evaluate a checkpoint with MMEngine's Runner (top-1, COCO mAP, ...).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]
                         [--launcher none|pytorch|slurm] [--allow-unsafe-pickle]

A distillation checkpoint holds the teacher's tensors: testing it needs no
teacher file (the teacher is built from its config and loaded, strictly,
from CHECKPOINT; inference never runs it).
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction

from fmkt_mm.apis import (apply_distiller, build_runner, clean_up_on_failure, load_teacher_state,
                          prepare_work_dir, teacher_from_checkpoint)
from fmkt_mm.checkpoint import trust_file
from fmkt_mm.launch import setup_launcher, shutdown_process_group


def parse_args():
    parser = argparse.ArgumentParser(description='Test a (distilled) model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
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
    setup_launcher(cfg, args.launcher)
    work_dir = prepare_work_dir(cfg, args.config, args.work_dir)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint!r}')
    cfg.load_from = args.checkpoint
    if args.allow_unsafe_pickle and cfg.get('load_from'):
        trust_file(cfg.load_from)
    teacher_state = teacher_from_checkpoint(cfg, args.checkpoint)
    with clean_up_on_failure(work_dir):
        runner = build_runner(cfg)
        if teacher_state is not None:
            load_teacher_state(runner.model, teacher_state, args.checkpoint)
            del teacher_state
            runner.logger.info(f'the teacher\'s weights come from {args.checkpoint} (its own '
                               f'file is not needed to test)')
    runner.test()
    shutdown_process_group()


if __name__ == '__main__':
    main()
