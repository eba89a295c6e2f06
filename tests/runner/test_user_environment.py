"""A user's own config and environment, as they meet them: a distiller block
without ``runner_type`` under the installed packages' own launchers, a task
package that is not installed, a new-style (pure-Python) config, and a COCO
test that scored no box."""
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

import fmkt_mm  # noqa: F401
from fmkt_mm.runner_guard import MissingTaskPackageError, check_runner_config
from tiny_runs import ROOT, TESTS, stock_tool

PYTHON = sys.executable
ENV = dict(os.environ, OMP_NUM_THREADS='1',
           PYTHONPATH=os.pathsep.join([TESTS, ROOT, os.environ.get('PYTHONPATH', '')]))

#: a user's configs: a stock config of each package, fmkt_mm imported, a
#: distiller block, and no runner_type
USER_CONFIGS = dict(
    mmdet='''
_base_ = ['mmdet::retinanet/retinanet_r18_fpn_1x_coco.py']
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
distiller = dict(type='fmkt_mm.DetectionDistiller', student_tap='neck', teacher_tap='neck',
                 teacher=dict(config='mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', checkpoint='t.pth'))
''',
    mmpretrain='''
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
distiller = dict(type='fmkt_mm.ClassificationDistiller', student_tap='neck', teacher_tap='head',
                 teacher=dict(config='mmpretrain::resnet/resnet34_8xb32_in1k.py', checkpoint='t.pth'))
''',
    mmseg='''
_base_ = ['mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py']
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
distiller = dict(type='fmkt_mm.SegmentationDistiller', student_tap='backbone', teacher_tap='backbone',
                 teacher=dict(config='mmseg::pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py',
                              checkpoint='t.pth'))
''',
)


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.slow
def test_mmdets_own_train_py_refuses_a_distiller_block_without_the_runner(tmp_path):
    """The route that trained the plain student with exit 0: mmdet's own
    train.py (as ``mim train mmdet`` runs it), a user's config that imports
    fmkt_mm and has no runner_type. Refused before anything is written."""
    config = write(tmp_path, 'user_retinanet.py', USER_CONFIGS['mmdet'])
    work_dir = tmp_path / 'work'
    result = subprocess.run([PYTHON, stock_tool('mmdet', 'train.py'), config, '--work-dir', str(work_dir)],
                            capture_output=True, text=True, env=ENV, cwd=str(tmp_path), timeout=300)
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Add runner_type = 'fmkt_mm.DistillRunner'" in result.stderr, result.stderr[-3000:]
    assert 'user_retinanet.py has a distiller block' in result.stderr
    assert not work_dir.exists()


@pytest.mark.slow
def test_every_stock_launcher_refuses_or_distils(tmp_path):
    """mmdet's, mmpretrain's and mmseg's own tools/train.py and tools/test.py,
    run as their ``__main__`` in one interpreter: each refuses the user's
    config with the line to add, before creating its work dir."""
    script = ['import runpy, sys, os']
    for package, text in USER_CONFIGS.items():
        config = write(tmp_path, f'user_{package}.py', text)
        for tool, extra in (('train.py', []), ('test.py', ['t.pth'])):
            work_dir = str(tmp_path / f'work_{package}_{tool}')
            argv = [stock_tool(package, tool), config] + extra + ['--work-dir', work_dir]
            script.append(f'''
sys.argv = {argv!r}
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
except ValueError as err:
    assert "Add runner_type = 'fmkt_mm.DistillRunner'" in str(err), err
    assert not os.path.exists({work_dir!r}), {work_dir!r}
    print('refused', {package!r}, {tool!r})
else:
    raise AssertionError('{package} {tool} ran the plain model')
''')
    result = subprocess.run([PYTHON, '-c', '\n'.join(script)], capture_output=True, text=True, env=ENV,
                            cwd=str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    for package in USER_CONFIGS:
        for tool in ('train.py', 'test.py'):
            assert f'refused {package} {tool}' in result.stdout


def test_the_guard_passes_what_fmkt_mm_applied_and_plain_configs():
    from mmengine.runner import Runner

    from fmkt_mm.runner import DistillRunner
    check_runner_config(Config(dict(model=dict(type='RetinaNet'), default_scope='mmdet')), Runner)
    check_runner_config(None, Runner)
    with pytest.raises(ValueError, match='fmkt_mm.runner.DistillRunner, which ignores the block'):
        check_runner_config(Config(dict(model=dict(), distiller=dict(type='X'))), DistillRunner)
    assert getattr(Runner.__init__, '_fmkt_mm_guarded', False)


BLOCKED_RUN = '''
import sys
sys.modules[{blocked!r}] = None  # the package is not installed
import runpy
sys.argv = {argv!r}
runpy.run_path(sys.argv[0], run_name='__main__')
'''


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_a_missing_task_package_names_the_extra(tool, tmp_path):
    """A classification config where mmpretrain is not installed: one error
    naming the extra to install, from the project's own tools."""
    config = osp.join(ROOT, 'configs', 'fashion_mnist', 'student_resnet18_w4.py')
    argv = [osp.join(ROOT, 'tools', tool), config] + (['x.pth'] if tool == 'test.py' else []) + \
        ['--work-dir', str(tmp_path / 'work')]
    result = subprocess.run([PYTHON, '-c', BLOCKED_RUN.format(blocked='mmpretrain', argv=argv)],
                            capture_output=True, text=True, env=ENV, cwd=str(tmp_path), timeout=300)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('fmkt_mm.runner_guard.MissingTaskPackageError'), result.stderr[-3000:]
    assert "default_scope='mmpretrain'" in last and 'pip install -e ".[cls]"' in last
    assert 'is not in the mmengine::model registry' not in result.stderr
    assert not (tmp_path / 'work').exists()


def test_a_missing_task_package_is_refused_by_any_runner():
    cfg = Config(dict(model=dict(type='ImageClassifier'), default_scope='mmpretrain_not_installed'))
    check_runner_config(cfg, object)  # an unknown scope is left to MMEngine
    from fmkt_mm import runner_guard
    real = runner_guard.package_importable
    runner_guard.package_importable = lambda name: False
    try:
        with pytest.raises(MissingTaskPackageError, match=r'pip install -e "\.\[seg\]"'):
            check_runner_config(Config(dict(model=dict(), default_scope='mmseg')), object)
    finally:
        runner_guard.package_importable = real


#: a new-style (pure-Python) base in the form of mmdet 3.x's ``mmdet/configs``:
#: every type a class (mmdet's wheel ships only old-style configs)
NEW_STYLE_BASE = '''
from mmengine.hooks import CheckpointHook, IterTimerHook, LoggerHook, ParamSchedulerHook
from mmengine.runner import LogProcessor
from mmdet.models import FPN, DetDataPreprocessor, ResNet, RetinaHead, RetinaNet
from mmdet.models.losses import FocalLoss, L1Loss
from mmdet.models.task_modules import AnchorGenerator, DeltaXYWHBBoxCoder, MaxIoUAssigner, PseudoSampler

default_scope = None
model = dict(
    type=RetinaNet,
    data_preprocessor=dict(type=DetDataPreprocessor, mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type=ResNet, depth=18, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True, style='pytorch'),
    neck=dict(type=FPN, in_channels=[64, 128, 256, 512], out_channels=32, start_level=1,
              add_extra_convs='on_input', num_outs=5),
    bbox_head=dict(type=RetinaHead, num_classes=10, in_channels=32, stacked_convs=1, feat_channels=32,
                   anchor_generator=dict(type=AnchorGenerator, octave_base_scale=4, scales_per_octave=3,
                                         ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
                   bbox_coder=dict(type=DeltaXYWHBBoxCoder, target_means=[.0, .0, .0, .0],
                                   target_stds=[1.0, 1.0, 1.0, 1.0]),
                   loss_cls=dict(type=FocalLoss, use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                   loss_bbox=dict(type=L1Loss, loss_weight=1.0)),
    train_cfg=dict(assigner=dict(type=MaxIoUAssigner, pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                 ignore_iof_thr=-1),
                   sampler=dict(type=PseudoSampler), allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=100))
default_hooks = dict(timer=dict(type=IterTimerHook), logger=dict(type=LoggerHook, interval=50),
                     param_scheduler=dict(type=ParamSchedulerHook),
                     checkpoint=dict(type=CheckpointHook, interval=1))
log_processor = dict(type=LogProcessor, window_size=50, by_epoch=True)
'''

NEW_STYLE = '''
from mmengine.config import read_base

with read_base():
    from .retinanet_base import *  # noqa: F401,F403

from fmkt_mm.distill import DetectionDistiller
from fmkt_mm.runner import DistillRunner

runner_type = DistillRunner
distiller = dict(type=DetectionDistiller, student_tap='neck', teacher_tap='neck', levels=(0, 1),
                 teacher=dict(config={teacher!r}, checkpoint=None, allow_random_init=True))
'''


@pytest.mark.slow
def test_a_new_style_config_gets_the_guarantees_of_an_old_style_one(tmp_path):
    """mmengine's pure-Python config, inheriting a new-style base of mmdet's
    form: types are classes, compared through the registries, so the run gets the
    durable checkpoint hook, the safe-checkpoint and random-state hooks and
    the distillation log processor."""
    from mmengine.registry import RUNNERS

    from fmkt_mm.hooks import DurableCheckpointHook, RandomStateHook, SafeCheckpointHook
    from fmkt_mm.log_processor import DistillLogProcessor
    from fmkt_mm.runner import DistillRunner
    write(tmp_path, 'retinanet_base.py', NEW_STYLE_BASE)
    teacher = write(tmp_path, 'teacher.py', NEW_STYLE_BASE)
    config = write(tmp_path, 'new_style.py', NEW_STYLE.format(teacher=teacher))
    cfg = Config.fromfile(config)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_dataloader = cfg.val_dataloader = cfg.test_dataloader = None
    cfg.train_cfg = cfg.val_cfg = cfg.test_cfg = cfg.optim_wrapper = cfg.param_scheduler = None
    cfg.val_evaluator = cfg.test_evaluator = None
    runner = RUNNERS.build(cfg)
    assert isinstance(runner, DistillRunner)
    hooks = {type(hook) for hook in runner.hooks}
    assert {DurableCheckpointHook, SafeCheckpointHook, RandomStateHook} <= hooks, hooks
    assert isinstance(runner.log_processor, DistillLogProcessor)
    assert type(runner.model).__name__ == 'DetectionDistiller'


@pytest.mark.slow
def test_a_coco_test_without_a_box_says_what_it_means(coco_set, det_teacher, tmp_path):
    """mmdet's CocoMetric prints "The testing results of the whole dataset is
    empty" and no mAP when no box passed the score threshold; the runner says
    that it means an undertrained model, and the option that scores it anyway."""
    from mmengine.logging import MMLogger

    from fmkt_mm.apis import build_runner
    from tiny_runs import retinanet, runner_config
    student = retinanet(8, 32)
    student.test_cfg.score_thr = 1.1  # no score passes
    cfg = runner_config('fmkt_retinanet_r18_to_r18w16_deploy-student.py', str(tmp_path / 'run'), coco_set,
                        student, det_teacher)
    runner = build_runner(cfg)
    metrics = runner.test()
    assert not any(key.endswith('_mAP') for key in metrics)
    log = open(MMLogger.get_current_instance().log_file).read()
    assert 'no COCO mAP: no predicted box passed the score threshold (model.test_cfg.score_thr = 1.1)' in log
    assert '--cfg-options model.test_cfg.score_thr=0.0' in log


def test_the_empty_result_message_names_the_two_stage_threshold():
    from types import SimpleNamespace

    from mmdet.evaluation import CocoMetric

    from fmkt_mm.runner import empty_detection_result
    evaluator = SimpleNamespace(metrics=[CocoMetric()])
    cfg = Config(dict(model=dict(student=dict(test_cfg=dict(rpn=dict(), rcnn=dict(score_thr=0.05))))))
    message = empty_detection_result(cfg, evaluator, {})
    assert 'model.test_cfg.rcnn.score_thr = 0.05' in message and 'model.test_cfg.rcnn.score_thr=0.0' in message
    assert empty_detection_result(cfg, evaluator, {'coco/bbox_mAP': 0.0}) is None
    assert empty_detection_result(cfg, SimpleNamespace(metrics=[]), {}) is None
