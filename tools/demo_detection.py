"""FM-KT for detection on a CPU: teacher, student alone, distilled students.

Composes the Fashion-MNIST detection set (real garments pasted on 128 px
canvases, COCO json), trains the teacher (unless its checkpoint exists),
the student alone and the student distilled with FM-KT in both deploy modes,
evaluates each with COCO mAP and prints a markdown table::

    python tools/demo_detection.py                 # RetinaNet pair, about 20 min on 2 cores
    python tools/demo_detection.py --quick         # a tiny smoke run (about 1 min)
    python tools/demo_detection.py --pair faster-rcnn

The teacher's checkpoint is saved as a plain state_dict (atomically), which
the distillation configs load with ``weights_only=True``. A second run reuses
it and retrains only the students.
"""
import argparse
import os
import os.path as osp
import time

import torch
from mmengine.runner import Runner

import fmkt_mm  # noqa: F401  (registers the components)
from fmkt_mm import experiment
from fmkt_mm.console import quiet_run
from fmkt_mm.datasets import make_detection_set

PAIRS = {
    'retinanet': dict(
        teacher='retinanet_r18_teacher.py',
        student='retinanet_r18w16_student.py',
        distilled={'student': 'fmkt_retinanet_r18_to_r18w16_deploy-student.py',
                   'flow': 'fmkt_retinanet_r18_to_r18w16_deploy-flow.py'}),
    'faster-rcnn': dict(
        teacher='faster-rcnn_r18_teacher.py',
        student='faster-rcnn_r18w16_student.py',
        distilled={'student': 'fmkt_faster-rcnn_r18_to_r18w16_deploy-student.py',
                   'flow': 'fmkt_faster-rcnn_r18_to_r18w16_deploy-flow.py'}),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--pair', choices=sorted(PAIRS), default='retinanet')
    parser.add_argument('--quick', action='store_true',
                        help='a tiny smoke run: 48 train / 24 val images, 1 epoch each')
    parser.add_argument('--data-root', help='where the set is composed (default data/fashion_det, '
                                            'data/fashion_det_quick with --quick)')
    parser.add_argument('--work-dir', help='default work_dirs/fashion_det (work_dirs/fashion_det_quick)')
    parser.add_argument('--num-train', type=int, default=1200)
    parser.add_argument('--num-val', type=int, default=300)
    parser.add_argument('--teacher-epochs', type=int, default=10)
    parser.add_argument('--student-epochs', type=int, default=8)
    parser.add_argument('--modes', nargs='+', choices=['student', 'flow'], default=['student', 'flow'],
                        help='deploy modes of the distilled students')
    parser.add_argument('--retrain-teacher', action='store_true',
                        help='train the teacher even if its checkpoint exists')
    parser.add_argument('--threads', type=int,
                        help='torch threads; 1 avoids heavy slow-downs when other jobs share the cores')
    args = parser.parse_args()
    if args.quick:
        args.num_train, args.num_val = 16, 8
        args.teacher_epochs = args.student_epochs = 1
    suffix = '_quick' if args.quick else ''
    args.data_root = args.data_root or osp.join('data', 'fashion_det' + suffix)
    args.work_dir = args.work_dir or osp.join('work_dirs', 'fashion_det' + suffix)
    return args


def config(name: str, args, epochs: int, teacher: str = None):
    """A demo config on this run's data and epochs, in its own work dir, ready to run."""
    path = osp.join('fashion_det', name)
    cfg = experiment.point_detection(experiment.load(path), args.data_root, epochs)
    experiment.set_teacher(cfg, teacher)
    return experiment.finalize(cfg, path, osp.join(args.work_dir, osp.splitext(name)[0]))


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def inference_parameters(model) -> int:
    """Parameters that run at inference (the distilled flow-mode model adds
    its flows' meta-encoders; the adapters only serve the training loss)."""
    if getattr(model, 'deploy_mode', None) is None:
        return count_parameters(model)
    total = count_parameters(model.student)
    if model.deploy_mode == 'flow':
        total += sum(count_parameters(flow.encoder) for flow in model.flows)
    return total


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    total_start = time.time()
    pair = PAIRS[args.pair]
    print(f'composing the detection set in {args.data_root} '
          f'({args.num_train} train / {args.num_val} val, 128 px)', flush=True)
    make_detection_set(args.data_root, args.num_train, args.num_val, image_size=128, seed=0)

    rows = []
    teacher_name = osp.splitext(pair['teacher'])[0]
    teacher_ckpt = osp.join(args.work_dir, f'{teacher_name}.pth')
    cfg = config(pair['teacher'], args, args.teacher_epochs)
    if osp.isfile(teacher_ckpt) and not args.retrain_teacher:
        print(f'reusing the teacher checkpoint {teacher_ckpt}', flush=True)
        cfg.load_from = teacher_ckpt
        with quiet_run('teacher (test only)', cfg.work_dir):
            runner = Runner.from_cfg(cfg)
            metrics, seconds, model = runner.test(), None, runner.model
    else:
        run = experiment.train_and_test(cfg, 'teacher')
        experiment.save_weights(run, teacher_ckpt)
        metrics, seconds, model = run.metrics, run.seconds, run.model
    rows.append(('teacher', teacher_name, '-', inference_parameters(model), seconds, metrics))

    run = experiment.train_and_test(config(pair['student'], args, args.student_epochs), 'student alone')
    rows.append(('student alone', osp.splitext(pair['student'])[0], '-', inference_parameters(run.model),
                 run.seconds, run.metrics))

    for mode in args.modes:
        name = pair['distilled'][mode]
        run = experiment.train_and_test(config(name, args, args.student_epochs, teacher_ckpt),
                                        f'FM-KT ({mode})')
        rows.append(('FM-KT student', osp.splitext(name)[0], mode, inference_parameters(run.model),
                     run.seconds, run.metrics))

    lines = [
        f'Fashion-MNIST detection ({args.num_train} train / {args.num_val} val images, 128 px), '
        f'teacher {args.teacher_epochs} epochs, students {args.student_epochs} epochs, '
        f'torch threads {torch.get_num_threads()}',
        '',
        '| model | config | deploy | params at inference | train time | bbox mAP | mAP@50 | mAP@75 |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for role, name, mode, params, seconds, metrics in rows:
        train_time = 'reused' if seconds is None else f'{seconds / 60:.1f} min'
        # CocoMetric returns no numbers when the model detected nothing at all
        scores = ' | '.join(f'{100 * metrics.get(f"coco/bbox_{key}", 0.0):.1f}'
                            for key in ('mAP', 'mAP_50', 'mAP_75'))
        lines.append(f'| {role} | {name} | {mode} | {params / 1e6:.2f} M | {train_time} | {scores} |')
    lines.append('')
    lines.append(f'total wall time {(time.time() - total_start) / 60:.1f} min')
    table = '\n'.join(lines)
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, f'results_{args.pair}.md'), 'w') as f:
        f.write(table + '\n')
    print('\n' + table, flush=True)


if __name__ == '__main__':
    main()
