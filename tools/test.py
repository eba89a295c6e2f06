"""Evaluate a checkpoint with fmkt_mm's runner (top-1, COCO mAP, ...).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out RESULTS.pkl] [--show-dir DIR [--interval N]]
                         [--cfg-options k=v ...] [--allow-unsafe-pickle] [--allow-partial-load]
                         [--launcher none|pytorch|slurm|mpi]

A distillation checkpoint holds the teacher's tensors: testing it needs no
teacher file (the teacher is built from its config and loaded, strictly,
from CHECKPOINT; inference never runs it). A checkpoint that does not fit the
config (e.g. a plain student checkpoint given with a distillation config) is
refused with the missing and unexpected keys, never scored.
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.evaluator import DumpResults

from fmkt_mm.apis import build_runner, tool_config
from fmkt_mm.launch import shutdown_process_group
from fmkt_mm.storage import is_url


def parse_args():
    parser = argparse.ArgumentParser(description='Test a (distilled) model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (or http(s) URL)')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--out', help='dump the predictions to this pickle file (.pkl), as mmdet\'s '
                                      'and mmpretrain\'s test.py --out')
    parser.add_argument('--show-dir', help='draw the predictions into this folder (under the run\'s '
                                           'log folder when relative), as mmdet\'s test.py --show-dir')
    parser.add_argument('--interval', type=int, default=1,
                        help='with --show-dir: draw every N-th sample (default: every one)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value')
    parser.add_argument('--allow-unsafe-pickle', action='store_true',
                        help='let CHECKPOINT be read with full unpickling, which can execute code: only '
                             'for files you trust. Without it such files are refused; checkpoints '
                             'written by these tools never need it')
    parser.add_argument('--allow-partial-load', action='store_true',
                        help='score a checkpoint that does not fit the model (what fits is loaded, '
                             'the rest keeps its initialisation); without it that is refused')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def show_predictions(cfg: Config, out_dir: str, interval: int = 1) -> Config:
    """Turn on the config's visualization hook (mmdet's ``draw`` /
    ``test_out_dir``, mmpretrain's ``enable`` / ``out_dir``)."""
    hook = (cfg.get('default_hooks') or {}).get('visualization')
    if not hook:
        raise ValueError('--show-dir needs default_hooks.visualization in the config (mmdet: '
                         "dict(type='DetVisualizationHook'); mmpretrain: dict(type='VisualizationHook'))")
    if 'DetVisualizationHook' in str(hook.get('type')):
        hook.update(draw=True, test_out_dir=out_dir, interval=interval)
    else:
        hook.update(enable=True, out_dir=out_dir, interval=interval)
    return cfg


def main():
    args = parse_args()
    cfg = tool_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    if not is_url(args.checkpoint) and not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint!r}')
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must name a .pkl file, got {args.out!r}')
    cfg.load_from, cfg.resume = args.checkpoint, False
    if args.allow_unsafe_pickle:
        cfg.allow_unsafe_pickle = True
    if args.allow_partial_load:
        cfg.allow_partial_load = True
    if args.show_dir:
        show_predictions(cfg, args.show_dir, args.interval)
    runner = build_runner(cfg)
    if args.out is not None:
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    runner.test()
    del runner  # free the DDP wrapper, which holds the process group, before closing it
    shutdown_process_group()


if __name__ == '__main__':
    main()
