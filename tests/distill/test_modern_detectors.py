"""The detectors mmdet 3.x users train today (RTMDet, YOLOX, DINO, Deformable
DETR) distil through their own stock configs: the shipped configs parse as
they are meant to, and one config of each family trains two iterations on
COCO-layout random data (mmdet's own 80 class names), is tested, exported,
and the export loads in plain mmdet without fmkt_mm. The stock hook lists
are kept: mmdet's EMAHook averages the student only, and distillation stops
at RTMDet's / YOLOX's pipeline switch."""
import glob
import json
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config

import fmkt_mm  # noqa: F401
from fmkt_mm.apis import apply_distiller
from tiny_runs import ROOT, stock_tool

MODERN = osp.join(ROOT, 'configs', 'mmdet')
FAMILIES = ('rtmdet', 'dino', 'deformable-detr')


def modern_configs():
    return sorted(p for p in glob.glob(osp.join(MODERN, '*.py'))
                  if re.match(r'(fmkt|cwd)_(rtmdet|yolox|dino|deformable-detr)', osp.basename(p)))


def test_the_modern_configs_parse_with_their_stock_hooks():
    configs = modern_configs()
    assert len(configs) == 14  # RTMDet's 4 published pairs, YOLOX, DINO, Deformable DETR; FM-KT and CWD
    for path in configs:
        name = osp.basename(path)
        cfg = apply_distiller(Config.fromfile(path))
        assert cfg.runner_type == 'fmkt_mm.DistillRunner', name
        model = cfg.model
        assert model.type == ('fmkt_mm.DetectionDistiller' if name.startswith('fmkt') else
                              'fmkt_mm.FeatureDistiller'), name
        assert model.teacher.config.startswith('mmdet::'), name
        assert re.fullmatch(r'https://download\.openmmlab\.com/mmdetection/v[23]\.0/.+-[0-9a-f]{8}\.pth',
                            model.teacher.checkpoint), name
        assert model.student_tap == model.teacher_tap == 'neck'
        assert 'adapter' not in model  # built by themselves where the widths differ
        if name.startswith('cwd'):
            assert model.loss.type == 'fmkt_mm.CWDLoss' and model.teacher_norm and model.level_weights == 1.0
        else:  # the same total weight on the student's levels: 2 x 0.5 (ensemble, teacher)
            assert model.deploy_mode == 'student' and model.raw_loss_weight == 1.0 and model.level_weights == 0.5
            # RTMDet: CWD as the metric, the form the RTMDet study supports; the others the default's
            metric = 'fmkt_mm.CWDLoss' if 'rtmdet' in name else 'fmkt_mm.PKDLoss'
            assert model.flow.loss.type == metric and model.get('teacher_norm', False) == ('rtmdet' in name)
            assert (model.get('raw_loss') or dict(type=metric))['type'] == metric
        hooks = [h.type for h in cfg.get('custom_hooks', [])]
        if 'rtmdet' in name or 'yolox' in name:
            assert 'EMAHook' in hooks, name  # the stock config's, kept
            stop = [h for h in cfg.custom_hooks if h.type == 'fmkt_mm.StopDistillationHook']
            assert len(stop) == 1 and stop[0].stop_epoch == 'pipeline_switch', name
            assert ('PipelineSwitchHook' if 'rtmdet' in name else 'YOLOXModeSwitchHook') in hooks


# -- two iterations of a config of each family --------------------------------------------------

SIZE = 64


@pytest.fixture(scope='module')
def coco80(tmp_path_factory):
    """A COCO-layout set of random 64 px images (4 train, 2 val) whose
    categories are COCO's own 80, so the stock configs read it as they are."""
    from mmdet.datasets import CocoDataset
    root = tmp_path_factory.mktemp('coco80')
    classes = CocoDataset.METAINFO['classes']
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(classes)]
    gen = np.random.default_rng(0)
    import cv2
    for split, count in (('train', 4), ('val', 2)):
        (root / split).mkdir()
        images, annotations = [], []
        for i in range(count):
            name = f'{i:04d}.jpg'
            cv2.imwrite(str(root / split / name), gen.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
            images.append(dict(id=i + 1, file_name=name, width=SIZE, height=SIZE))
            x, y, w, h = (float(v) for v in (8 + 4 * i, 10, 30, 36))
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1, category_id=1 + (7 * i) % 80,
                                    bbox=[x, y, w, h], area=w * h, iscrowd=0))
        (root / 'annotations').mkdir(exist_ok=True)
        with open(root / 'annotations' / f'instances_{split}.json', 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return str(root) + '/'


def _plain_bn(node):
    """SyncBN -> BN everywhere (one CPU process has no process group)."""
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
        for value in node.values():
            _plain_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _plain_bn(value)


def tiny_run_config(path: str, data_root: str, work_dir: str) -> Config:
    """A shipped config as it trains here: the COCO-layout set at 64 px with
    a plain pipeline, 2 iterations of one epoch, BN for SyncBN, the teacher
    randomly initialised (no download), every box scored."""
    cfg = Config.fromfile(path)
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                dict(type='Resize', scale=(SIZE, SIZE), keep_ratio=True), dict(type='PackDetInputs')]
    test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(SIZE, SIZE), keep_ratio=True),
                     dict(type='LoadAnnotations', with_bbox=True),
                     dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                           'scale_factor'))]
    mixed = cfg.train_dataloader.dataset.type == 'MultiImageMixDataset'  # YOLOX's: its mode switch needs it
    for loader, split in (('train_dataloader', 'train'), ('val_dataloader', 'val'), ('test_dataloader', 'val')):
        dataset = dict(type='CocoDataset', data_root=data_root, ann_file=f'annotations/instances_{split}.json',
                       data_prefix=dict(img=f'{split}/'), test_mode=split == 'val',
                       pipeline=pipeline if split == 'train' else test_pipeline)
        if split == 'train' and mixed:
            dataset = dict(type='MultiImageMixDataset', pipeline=pipeline[2:],
                           dataset=dict(dataset, pipeline=pipeline[:2]))
        cfg[loader] = dict(batch_size=2, num_workers=0, persistent_workers=False,
                           sampler=dict(type='DefaultSampler', shuffle=split == 'train'), dataset=dataset)
    cfg.val_evaluator = cfg.test_evaluator = dict(type='CocoMetric', metric='bbox',
                                                  ann_file=data_root + 'annotations/instances_val.json')
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=16)
    cfg.default_hooks.visualization = dict(type='DetVisualizationHook')
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    _plain_bn(cfg.model)
    cfg.model.data_preprocessor.pop('batch_augments', None)  # YOLOX's multi-scale resizing
    test_cfg = cfg.model.test_cfg or {}
    if 'score_thr' in test_cfg:
        test_cfg.score_thr = 0.0
    teacher = Config.fromfile(cfg.distiller.teacher.config.replace(
        'mmdet::', osp.join(osp.dirname(__import__('mmdet').__file__), '.mim', 'configs') + '/'))
    model = teacher.model
    _plain_bn(model)
    model.data_preprocessor.pop('batch_augments', None)
    if osp.basename(path).split('_')[1].startswith('dino'):  # Swin-L is too large for a test: R50, 5 scales
        model = Config.fromfile(osp.join(osp.dirname(__import__('mmdet').__file__), '.mim', 'configs',
                                         'dino', 'dino-4scale_r50_8xb2-12e_coco.py')).model
        model.update(num_feature_levels=5)
        model.backbone.update(out_indices=(0, 1, 2, 3), init_cfg=None)
        model.neck.update(in_channels=[256, 512, 1024, 2048], num_outs=5)
        model.encoder.layer_cfg.self_attn_cfg.num_levels = 5
        model.decoder.layer_cfg.cross_attn_cfg.num_levels = 5
    model.backbone.init_cfg = None
    cfg.model.backbone.init_cfg = None
    for detector in (model, cfg.model):
        if 'num_queries' in detector:  # DETRs: fewer queries than a 64 px image has tokens, ResNet-18
            detector.num_queries = 50
            stages = detector.backbone.out_indices
            detector.backbone.update(depth=18, frozen_stages=-1)
            detector.neck.in_channels = [64 * 2 ** i for i in stages]
            detector.encoder.num_layers = detector.decoder.num_layers = 1
    cfg.distiller.teacher = dict(config=model, checkpoint=None, allow_random_init=True)
    cfg.distiller.dummy_input_shape = (3, SIZE, SIZE)
    return cfg


#: one config of each family trained here (YOLOX's EMA, mode switch and stop are tested below without
#: training: its M and L models are the slowest to build)
FAMILY_CONFIGS = {
    'rtmdet': 'fmkt_rtmdet_s_to_tiny_8xb32-300e_coco.py',
    'dino': 'fmkt_dino-5scale_swin-l_to_dino-4scale_r50_8xb2-12e_coco.py',
    'deformable-detr': 'cwd_deformable-detr-refine-twostage_to_deformable-detr_r50_16xb2-50e_coco.py',
}


@pytest.mark.slow
@pytest.mark.parametrize('family', FAMILIES)
def test_a_config_of_each_family_trains_tests_and_exports(family, coco80, tmp_path):
    from mmengine.registry import RUNNERS

    from fmkt_mm.export import export_student
    name = FAMILY_CONFIGS[family]
    work_dir = str(tmp_path / 'work')
    cfg = tiny_run_config(osp.join(MODERN, name), coco80, work_dir)
    config = str(tmp_path / 'distill_config.py')
    cfg.dump(config)
    if family == 'rtmdet':  # as a user runs it: mmdet's own tools/train.py (what mim train runs)
        done = subprocess.run([sys.executable, stock_tool('mmdet', 'train.py'), config, '--work-dir', work_dir],
                              capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
        assert done.returncode == 0, done.stderr[-3000:]
        assert 'Epoch(val) [1][1/1]' in done.stdout + done.stderr  # validated (an untrained model may score no box)
        assert 'FeatureAdapter (1x1 conv 96 -> 128 channels' in done.stdout + done.stderr  # no adapter line
    else:
        runner = RUNNERS.build(cfg)
        runner.train()
        assert runner.iter == 2
        metrics = runner.test()
        assert 'coco/bbox_mAP' in metrics, metrics
    checkpoint = torch.load(osp.join(work_dir, 'epoch_1.pth'), weights_only=True, map_location='cpu')
    state = checkpoint['state_dict']
    assert any(k.startswith('teacher.') for k in state) and any(k.startswith('student.') for k in state)
    if name.startswith('fmkt'):
        assert any(k.startswith('flows.') for k in state)
    if 'ema_state_dict' in checkpoint:  # the student's EMA only: no second copy of the teacher
        ema = checkpoint['ema_state_dict']
        assert ema and not any('teacher' in k for k in ema)
        assert all(k.startswith('module.student.') or k == 'steps' for k in ema), sorted(ema)[:5]
    out = str(tmp_path / 'student.pth')
    summary = export_student(config, osp.join(work_dir, 'epoch_1.pth'), out)
    assert summary['config_needs_fmkt_mm'] == []
    EXPORTS[family] = (summary['config'], out)


#: family -> (exported config, checkpoint), written by the test above
EXPORTS = {}


@pytest.mark.slow
def test_the_exports_load_in_plain_mmdet():
    """One process that never imports fmkt_mm builds each export with
    mmdet's init_detector (strict loading of the checkpoint)."""
    if len(EXPORTS) != len(FAMILIES):
        pytest.skip('runs with the training test of every family')
    script = ['import sys', 'from mmdet.apis import init_detector']
    for family, (config, checkpoint) in EXPORTS.items():
        script.append(f"print('PLAIN-MMDET-OK', {family!r}, type(init_detector({config!r}, {checkpoint!r}, "
                      f"device='cpu')).__name__)")
    script.append("assert 'fmkt_mm' not in sys.modules")
    done = subprocess.run([sys.executable, '-c', '\n'.join(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for family in FAMILIES:
        assert f'PLAIN-MMDET-OK {family}' in done.stdout, done.stdout


def test_yolox_stock_hooks_meet_the_distiller(coco80, tmp_path):
    """YOLOX's stock hook list on a distiller: mmdet's EMAHook becomes the
    student-only DistillEMAHook, the mode switch (which sets
    ``runner.model.bbox_head.use_l1``) reaches the student's head, and
    distillation stops at the switch (``max_epochs - num_last_epochs - 1``)."""
    from types import SimpleNamespace

    from fmkt_mm.config_prep import prepare_work_dir
    from fmkt_mm.hooks.stop_distillation_hook import pipeline_switch_epoch
    cfg = apply_distiller(Config.fromfile(osp.join(MODERN, 'fmkt_yolox_l_to_m_8xb8-300e_coco.py')))
    prepare_work_dir(cfg, 'yolox.py', str(tmp_path / 'work'))
    types = [h['type'] for h in cfg.custom_hooks]
    assert 'fmkt_mm.DistillEMAHook' in types and 'EMAHook' not in types
    assert {'YOLOXModeSwitchHook', 'SyncNormHook', 'fmkt_mm.StopDistillationHook'} <= set(types)
    from mmdet.engine.hooks import YOLOXModeSwitchHook
    runner = SimpleNamespace(hooks=[YOLOXModeSwitchHook(num_last_epochs=15)], max_epochs=300)
    assert pipeline_switch_epoch(runner) == 284
    with pytest.raises(ValueError, match="needs mmdet's PipelineSwitchHook"):
        pipeline_switch_epoch(SimpleNamespace(hooks=[], max_epochs=300))
