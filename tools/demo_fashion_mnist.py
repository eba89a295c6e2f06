"""The CPU demo: distil a Fashion-MNIST classifier with FM-KT, on real data.

1. trains the teacher (or reuses ``work_dirs/fashion_mnist/teacher.pth``),
2. trains the student alone and distilled with DIST (the strongest logit
   baseline of the recipe studies; ``--baselines kd dkd dist``),
3. distils the student with FM-KT (and, with ``--variants``, FM-KT^Theta / OFM-KT),
4. prints top-1 of each, and of the FM-KT ensemble at N = 1, 2, 4, 8 steps.

    python tools/demo_fashion_mnist.py [--epochs 6] [--train-samples 10000]
                                       [--baselines dist] [--variants fmkt fmkt_theta ofmkt] [--quick]

One run of each is one seed: the verdict on FM-KT against DIST
comes from paired runs over several seeds and teachers (docs/benchmarks.md).
"""
import argparse
import json
import os.path as osp

import fmkt_mm  # noqa: F401  (registers the components)
from fmkt_mm import experiment

CONFIGS = dict(
    teacher='teacher_resnet18_w16.py',
    student='student_resnet18_w4.py',
    fmkt='fmkt_resnet18_w16_to_resnet18_w4.py',
    fmkt_theta='fmkt_theta_resnet18_w16_to_resnet18_w4.py',
    ofmkt='ofmkt_resnet18_w4.py',
    kd='kd_resnet18_w16_to_resnet18_w4.py',
    dkd='dkd_resnet18_w16_to_resnet18_w4.py',
    dist='dist_resnet18_w16_to_resnet18_w4.py',
)
BASELINES = ('kd', 'dkd', 'dist')


def run(name, args, teacher_checkpoint=None) -> experiment.Run:
    """Train and test one config of the demo (one progress line on the console)."""
    config = osp.join('fashion_mnist', CONFIGS[name])
    cfg = experiment.shrink_classification(experiment.load(config), args.epochs, args.train_samples,
                                           args.test_samples)
    experiment.set_teacher(cfg, teacher_checkpoint)
    experiment.finalize(cfg, config, osp.join(args.work_dir, name))
    return experiment.train_and_test(cfg, name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=6)
    parser.add_argument('--train-samples', type=int, default=10000)
    parser.add_argument('--test-samples', type=int, default=None,
                        help='evaluate on a subset of the 10k test images')
    parser.add_argument('--variants', nargs='+', default=['fmkt'],
                        choices=['fmkt', 'fmkt_theta', 'ofmkt'])
    parser.add_argument('--baselines', nargs='*', default=['dist'], choices=BASELINES,
                        help='distillation baselines trained beside FM-KT (default: dist)')
    parser.add_argument('--work-dir', default='work_dirs/fashion_mnist')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: 1 epoch on 1,000 images, 1,000 test images')
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.train_samples, args.test_samples = 1, 1000, 1000
        args.work_dir = osp.join(args.work_dir, 'quick')

    def row(model, result, flow=False):
        return (model, result.metrics['accuracy/top1'],
                result.by_steps('test/flow/top1_steps') if flow else {}, result.seconds)

    rows = []
    teacher_checkpoint = osp.join(args.work_dir, 'teacher.pth')
    if osp.isfile(teacher_checkpoint):
        print(f'reusing the teacher in {teacher_checkpoint}')
        rows.append(('teacher (reused)', None, {}, 0.0))
    else:
        teacher = run('teacher', args)
        experiment.save_weights(teacher, teacher_checkpoint)
        rows.append(row('teacher ResNet-18 w16', teacher))
    rows.append(row('student alone ResNet-18 w4', run('student', args)))
    for baseline in args.baselines:
        rows.append(row(f'student + {baseline.upper()}', run(baseline, args, teacher_checkpoint)))
    for variant in args.variants:
        rows.append(row(f'student + {variant}', run(variant, args, teacher_checkpoint), flow=True))

    print('\n| model | top-1 (%) | flow ensemble top-1 at N = 1 / 2 / 4 / 8 | time (s) |')
    print('|---|---|---|---|')
    for name, top1, flow, seconds in rows:
        steps = ' / '.join(f'{flow[n]:.2f}' for n in sorted(flow)) if flow else '-'
        top1 = f'{top1:.2f}' if top1 is not None else '-'
        print(f'| {name} | {top1} | {steps} | {seconds:.0f} |')
    with open(osp.join(args.work_dir, 'demo_results.json'), 'w') as f:
        json.dump([dict(model=r[0], top1=r[1], flow_top1=r[2], seconds=r[3]) for r in rows], f, indent=1)


if __name__ == '__main__':
    main()
