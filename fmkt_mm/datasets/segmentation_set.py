"""A small semantic segmentation set composed from real Fashion-MNIST images.

The canvases are the detection set's (:func:`~fmkt_mm.datasets.render_canvas`:
1-4 real garments pasted at random scales on a dark textured background);
each garment's own pixels take its class, ``label + 1``, and the rest is the
background, class 0 (where two garments overlap, the one pasted later). The
layout is what mmseg's stock ``BaseSegDataset`` reads, with the class names
and palette of :data:`FASHION_SEG_METAINFO`::

    out_dir/
        meta.json                         # generator parameters and counts
        img_dir/train/000001.png ...      # RGB images
        ann_dir/train/000001.png ...      # uint8 label maps, 0..10
        img_dir/val/..., ann_dir/val/...

e.g. ``dict(type='BaseSegDataset', data_root=out_dir,
data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
img_suffix='.png', seg_map_suffix='.png', metainfo=FASHION_SEG_METAINFO)``.

Train canvases take their garments from the Fashion-MNIST ``train`` split and
val canvases from the ``test`` split. The same parameters give the same
files; the set is written into a temporary sibling directory and renamed into
place, and a complete set with the same parameters is left untouched.
"""
import json
import os
import shutil
import tempfile
from typing import Optional, Tuple

import numpy as np

from .detection_set import SPLIT_SOURCES, _write_png, render_canvas
from .idx import FASHION_MNIST_CLASSES, load_fashion_mnist

__all__ = ['FASHION_SEG_METAINFO', 'SEGMENTATION_SET_VERSION', 'make_segmentation_set']

SEGMENTATION_SET_VERSION = 1
#: ``metainfo`` for mmseg's ``BaseSegDataset`` over the set: the background, then the garments
FASHION_SEG_METAINFO = dict(
    classes=('background', ) + tuple(FASHION_MNIST_CLASSES),
    palette=[[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
             [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]])
_GENERATOR = 'fmkt_mm.datasets.segmentation_set'


def _write_label_map(path: str, labels: np.ndarray) -> None:
    import cv2
    ok, buf = cv2.imencode('.png', np.ascontiguousarray(labels.astype(np.uint8)))
    if not ok:
        raise RuntimeError(f'could not encode {path} as PNG')
    with open(path, 'wb') as f:
        f.write(buf.tobytes())


def _write_split(root: str, split: str, count: int, seed: int, params: dict,
                 source_root: Optional[str]) -> int:
    images, labels = load_fashion_mnist(SPLIT_SOURCES[split], source_root)
    rng = np.random.default_rng([seed, list(SPLIT_SOURCES).index(split)])
    size = params['image_size']
    for sub in ('img_dir', 'ann_dir'):
        os.makedirs(os.path.join(root, sub, split))
    pixels = 0
    for index in range(1, count + 1):
        canvas, objects = render_canvas(rng, images, labels, size, tuple(params['object_size']),
                                        tuple(params['num_objects']), params['max_iou'])
        label_map = np.zeros((size, size), dtype=np.uint8)
        for obj in objects:
            label_map[obj['mask']] = obj['label'] + 1
        pixels += int((label_map > 0).sum())
        name = f'{index:06d}.png'
        _write_png(os.path.join(root, 'img_dir', split, name), canvas)
        _write_label_map(os.path.join(root, 'ann_dir', split, name), label_map)
    return pixels


def make_segmentation_set(out_dir: str, num_train: int = 1000, num_val: int = 200, image_size: int = 64,
                          seed: int = 0, object_size: Tuple[int, int] = (16, 40),
                          num_objects: Tuple[int, int] = (1, 4), max_iou: float = 0.1,
                          source_root: Optional[str] = None) -> bool:
    """Write the set into ``out_dir`` (see the module docstring). Returns
    False when a complete set with the same parameters was already there."""
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train and num_val must be >= 1, got {num_train} and {num_val}')
    params = dict(generator=_GENERATOR, version=SEGMENTATION_SET_VERSION, num_train=num_train,
                  num_val=num_val, image_size=image_size, seed=seed, object_size=list(object_size),
                  num_objects=list(num_objects), max_iou=max_iou)
    meta_path = os.path.join(out_dir, 'meta.json')
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if {k: meta.get(k) for k in params} == params:
            return False
        if meta.get('generator') != _GENERATOR:
            raise FileExistsError(f'{out_dir!r} holds something else than a set of this generator; '
                                  f'choose another --out')
    elif os.path.exists(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f'{out_dir!r} exists and is not a segmentation set; choose another --out')
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.' + os.path.basename(os.path.abspath(out_dir)) + '.', dir=parent)
    try:
        counts = {split: _write_split(tmp, split, n, seed, params, source_root)
                  for split, n in (('train', num_train), ('val', num_val))}
        with open(os.path.join(tmp, 'meta.json'), 'w') as f:
            json.dump(dict(params, foreground_pixels=counts,
                           classes=list(FASHION_SEG_METAINFO['classes'])), f, indent=1)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True
