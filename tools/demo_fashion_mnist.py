"""The CPU demo: distil a Fashion-MNIST classifier with FM-KT, on real data.

1. trains the teacher (or reuses ``work_dirs/fashion_mnist/teacher.pth``),
2. trains the student alone (the baseline),
3. distils the student with FM-KT (and, with ``--variants``, FM-KT^Theta / OFM-KT),
4. prints top-1 of each, and of the FM-KT ensemble at N = 1, 2, 4, 8 steps.

    python tools/demo_fashion_mnist.py [--epochs 6] [--train-samples 10000]
                                       [--variants fmkt fmkt_theta ofmkt] [--quick]
"""
import argparse
import json
import os.path as osp
import time

from mmengine.config import Config
from mmengine.runner import Runner

import fmkt_mm  # noqa: F401  (registers the components)
from fmkt_mm.apis import apply_distiller, prepare_work_dir
from fmkt_mm.console import quiet_run
from fmkt_mm.export import atomic_torch_save

CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'fashion_mnist')
CONFIGS = dict(
    teacher='teacher_resnet18_w16.py',
    student='student_resnet18_w4.py',
    fmkt='fmkt_resnet18_w16_to_resnet18_w4.py',
    fmkt_theta='fmkt_theta_resnet18_w16_to_resnet18_w4.py',
    ofmkt='ofmkt_resnet18_w4.py',
)


def run(name, args, teacher_checkpoint=None):
    """Train one config and return (top-1, flow top-1 by steps, seconds, runner)."""
    path = osp.join(CONFIG_DIR, CONFIGS[name])
    cfg = Config.fromfile(path)
    cfg.train_cfg.max_epochs = args.epochs
    cfg.train_cfg.val_interval = args.epochs
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=True, T_max=args.epochs,
                                convert_to_iter_based=True)]
    cfg.train_dataloader.dataset.num_samples = args.train_samples
    if args.test_samples:
        cfg.val_dataloader.dataset.num_samples = args.test_samples
        cfg.test_dataloader = cfg.val_dataloader
    cfg.default_hooks.logger.interval = 50
    if 'distiller' in cfg and cfg.distiller.get('teacher') is not None:
        cfg.distiller.teacher.checkpoint = teacher_checkpoint
    apply_distiller(cfg)
    prepare_work_dir(cfg, path, osp.join(args.work_dir, name))
    start = time.time()
    with quiet_run(name, cfg.work_dir) as attach:
        runner = Runner.from_cfg(cfg)
        attach(runner)
        runner.train()
        metrics = runner.test()
    seconds = time.time() - start
    flow = {k.rsplit('steps', 1)[1]: v for k, v in runner.message_hub.log_scalars.items()
            if k.startswith('test/flow/top1_steps') for v in [v.current()]}
    return metrics['accuracy/top1'], flow, seconds, runner


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=6)
    parser.add_argument('--train-samples', type=int, default=10000)
    parser.add_argument('--test-samples', type=int, default=None,
                        help='evaluate on a subset of the 10k test images')
    parser.add_argument('--variants', nargs='+', default=['fmkt'],
                        choices=['fmkt', 'fmkt_theta', 'ofmkt'])
    parser.add_argument('--work-dir', default='work_dirs/fashion_mnist')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: 1 epoch on 1,000 images, 1,000 test images')
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.train_samples, args.test_samples = 1, 1000, 1000
        args.work_dir = osp.join(args.work_dir, 'quick')

    rows = []
    teacher_checkpoint = osp.join(args.work_dir, 'teacher.pth')
    if osp.isfile(teacher_checkpoint):
        print(f'reusing the teacher in {teacher_checkpoint}')
        rows.append(('teacher (reused)', None, {}, 0.0))
    else:
        top1, _, seconds, runner = run('teacher', args)
        atomic_torch_save(runner.model.state_dict(), teacher_checkpoint)
        rows.append(('teacher ResNet-18 w16', top1, {}, seconds))
    top1, _, seconds, _ = run('student', args)
    rows.append(('student alone ResNet-18 w4', top1, {}, seconds))
    for variant in args.variants:
        top1, flow, seconds, _ = run(variant, args, teacher_checkpoint)
        rows.append((f'student + {variant}', top1, flow, seconds))

    print('\n| model | top-1 (%) | flow ensemble top-1 at N = 1 / 2 / 4 / 8 | time (s) |')
    print('|---|---|---|---|')
    for name, top1, flow, seconds in rows:
        steps = ' / '.join(f'{flow[n]:.2f}' for n in sorted(flow, key=int)) if flow else '-'
        top1 = f'{top1:.2f}' if top1 is not None else '-'
        print(f'| {name} | {top1} | {steps} | {seconds:.0f} |')
    with open(osp.join(args.work_dir, 'demo_results.json'), 'w') as f:
        json.dump([dict(model=r[0], top1=r[1], flow_top1=r[2], seconds=r[3]) for r in rows], f, indent=1)


if __name__ == '__main__':
    main()
