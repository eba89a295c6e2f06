"""Mixed precision against fp32 for each classification variant.

Trains the Fashion-MNIST FM-KT, FM-KT^Theta and OFM-KT students twice with
the same seed, in fp32 and with ``--amp`` (fp16 with dynamic loss scaling on
a GPU, bf16 autocast on a CPU), evaluates each on the full test set and
prints a markdown table: the optim wrapper, the dtype the student's backbone
really computed in, the last training loss, top-1, the final loss scale and
the training time::

    python tools/benchmarks/amp.py --teacher work_dirs/fashion_mnist/teacher.pth [--epochs 2]
        [--train-samples 10000] [--variants fmkt fmkt_theta ofmkt]
"""
import os.path as osp
import time

import options
import study_tables

CONFIGS = dict(fmkt='fmkt_resnet18_w16_to_resnet18_w4.py',
               fmkt_theta='fmkt_theta_resnet18_w16_to_resnet18_w4.py',
               ofmkt='ofmkt_resnet18_w4.py')


def parse_args(argv=None):
    parser = options.parser(__doc__)
    parser.add_argument('--teacher', default=osp.join('work_dirs', 'fashion_mnist', 'teacher.pth'),
                        help='Fashion-MNIST teacher checkpoint (tools/demo_fashion_mnist.py writes it)')
    parser.add_argument('--variants', nargs='+', default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--train-samples', type=int, default=10000)
    parser.add_argument('--test-samples', type=int, default=None, help='default: all 10,000')
    options.add_output(parser, osp.join('work_dirs', 'benchmark_amp'), quick=False)
    return parser.parse_args(argv)


def run(variant: str, amp: bool, args) -> dict:
    from mmengine.runner import Runner

    from fmkt_mm import experiment
    from fmkt_mm.optim import enable_amp
    cfg = experiment.load(osp.join('fashion_mnist', CONFIGS[variant]))
    if cfg.distiller.get('teacher') is not None and not osp.isfile(args.teacher):
        raise FileNotFoundError(f'teacher checkpoint {args.teacher!r} not found: train one with '
                                f'tools/demo_fashion_mnist.py or pass --teacher')
    experiment.shrink_classification(cfg, args.epochs, args.train_samples)
    cfg.randomness = dict(seed=0)
    if args.test_samples:
        cfg.test_dataloader.dataset.num_samples = args.test_samples
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    experiment.set_teacher(cfg, args.teacher)
    experiment.finalize(cfg, CONFIGS[variant], osp.join(args.work_dir, f'{variant}_{int(amp)}'))
    if amp:
        enable_amp(cfg)
    runner = Runner.from_cfg(cfg)
    dtypes = set()
    runner.model.student.backbone.register_forward_hook(
        lambda m, i, o: dtypes.add(str(o[-1].dtype).replace('torch.', '')) if m.training else None)
    start = time.time()
    runner.train()
    seconds = time.time() - start
    top1 = float(runner.test()['accuracy/top1'])
    wrapper = runner.optim_wrapper
    scaler = getattr(wrapper, 'loss_scaler', None)
    return dict(variant=variant, precision='amp' if amp else 'fp32', wrapper=type(wrapper).__name__,
                dtypes=sorted(dtypes), loss=float(runner.message_hub.get_scalar('train/loss').current()),
                top1=top1, loss_scale=None if scaler is None else float(scaler.get_scale()),
                seconds=seconds)


def main(argv=None):
    args = parse_args(argv)
    import torch

    import fmkt_mm  # noqa: F401  (registers the components)
    rows = []
    for variant in args.variants:
        for amp in (False, True):
            rows.append(run(variant, amp, args))
            print(rows[-1], flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'
    print(f'\n{device}, torch {torch.__version__}, {args.epochs} epochs on {args.train_samples} images, '
          f'seed 0\n')
    print(study_tables.markdown_table(
        ['variant', 'precision', 'optim wrapper', 'student computes in', 'last loss', 'top-1', 'loss scale',
         'train s'],
        [[r['variant'], r['precision'], r['wrapper'], ', '.join(r['dtypes']), f'{r["loss"]:.4f}', f'{r["top1"]:.2f}',
          r['loss_scale'] or '-', f'{r["seconds"]:.1f}'] for r in rows]))
    return rows


if __name__ == '__main__':
    main()
