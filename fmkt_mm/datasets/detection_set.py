"""A small COCO-format detection set composed from real Fashion-MNIST images.

Every canvas is a square ``(S, S, 3)`` uint8 RGB image (``S = image_size``)
with a dark, mildly textured background (a smooth random colour field plus
low-amplitude pixel noise, never brighter than :data:`BACKGROUND_MAX`) on
which 1-4 Fashion-MNIST garments are pasted, each resized to a random square
side (20-64 px by default), tinted with a random colour and placed at a random
position fully inside the canvas. A placement whose box has IoU > 0.1 with a
box already on the canvas (or covers, or is covered by, more than 30% of it)
is retried elsewhere, and the garment is dropped after a few tries.

Each object's box is the tight box of the nonzero pixels of the resized
garment, in COCO's ``[x, y, w, h]`` pixel-edge convention (``x2 = x + w``),
and its instance mask (``segmentation``, COCO's compressed RLE) is those
pixels themselves: the garment's own silhouette, for instance segmentation
(Mask R-CNN, ``segm`` mAP). Where two garments overlap, each mask keeps its
whole garment.
Category ids are ``1..10`` = Fashion-MNIST label + 1 (COCO reserves 0 for the
background), and the ``categories`` names are the Fashion-MNIST class names
in label order, so mmdet's ``CocoDataset`` with
``metainfo=dict(classes=FASHION_MNIST_CLASSES)`` maps category id ``k`` to
training label ``k - 1``, i.e. back to the Fashion-MNIST label.

Train canvases take their garments from the Fashion-MNIST ``train`` split and
val canvases from the ``test`` split, so no source image is shared. The layout
is what mmdet's ``CocoDataset`` reads::

    out_dir/
        meta.json                       # generator parameters and counts
        train/000001.png ...            # image id 1, 2, ...
        val/000001.png ...
        annotations/instances_train.json
        annotations/instances_val.json

e.g. ``CocoDataset(data_root=out_dir,
ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
metainfo=dict(classes=FASHION_MNIST_CLASSES))``.

The same parameters give the same files byte for byte (given the same OpenCV
build, which resizes the garments and encodes the PNGs). Writing is atomic: the
set is composed in a temporary sibling directory that is renamed into place
at the end and removed on any error, and a complete set with the same
parameters already at ``out_dir`` is left untouched.
"""
import json
import os
import shutil
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np

from .canvas import BACKGROUND_MAX, render_canvas
from .idx import FASHION_MNIST_CLASSES, load_fashion_mnist

__all__ = [
    'BACKGROUND_MAX', 'DETECTION_SET_VERSION', 'FASHION_DET_METAINFO',
    'SPLIT_SOURCES', 'make_detection_set', 'render_canvas'
]

#: Bumped whenever the composition changes, so that sets made by an older
#: version are rebuilt instead of being taken as up to date.
DETECTION_SET_VERSION = 2
#: ``metainfo`` for mmdet's ``CocoDataset`` over the set.
FASHION_DET_METAINFO = dict(classes=FASHION_MNIST_CLASSES)
#: Output split -> the Fashion-MNIST split its garments come from.
SPLIT_SOURCES = {'train': 'train', 'val': 'test'}

_GENERATOR = 'fmkt_mm.datasets.detection_set'


def _rle(mask: np.ndarray) -> dict:
    """COCO's compressed RLE of an ``(H, W)`` boolean mask, as JSON-ready data."""
    from pycocotools import mask as mask_utils  # comes with mmdet
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(size=[int(v) for v in rle['size']], counts=rle['counts'].decode('ascii'))


def _write_png(path: str, rgb: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` uint8 RGB image as PNG."""
    import cv2
    ok, buf = cv2.imencode('.png', np.ascontiguousarray(rgb[..., ::-1]),
                           [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError(f'could not encode {path} as PNG')
    with open(path, 'wb') as f:
        f.write(buf.tobytes())


def _categories() -> List[dict]:
    return [dict(id=label + 1, name=name, supercategory='fashion')
            for label, name in enumerate(FASHION_MNIST_CLASSES)]


def _write_split(root: str, split: str, num_images: int, seed: int,
                 params: dict, source_root: Optional[str]) -> Dict[str, int]:
    """Render and write one split under ``root``; returns its counts."""
    images, labels = load_fashion_mnist(SPLIT_SOURCES[split], source_root)
    # One stream per split: val is the same whatever num_train is.
    rng = np.random.default_rng([seed, list(SPLIT_SOURCES).index(split)])
    size = params['image_size']
    image_dir = os.path.join(root, split)
    os.makedirs(image_dir)
    coco_images, annotations = [], []
    for image_id in range(1, num_images + 1):
        canvas, objects = render_canvas(
            rng, images, labels, size, tuple(params['object_size']),
            tuple(params['num_objects']), params['max_iou'])
        file_name = f'{image_id:06d}.png'
        _write_png(os.path.join(image_dir, file_name), canvas)
        coco_images.append(
            dict(id=image_id, file_name=file_name, width=size, height=size))
        for obj in objects:
            x, y, w, h = obj['bbox']
            annotations.append(
                dict(id=len(annotations) + 1, image_id=image_id,
                     category_id=obj['label'] + 1, bbox=[x, y, w, h],
                     area=w * h, iscrowd=0, segmentation=_rle(obj['mask'])))
    coco = dict(
        info=dict(description=f'Fashion-MNIST detection set, {split} split, '
                  f'garments from the Fashion-MNIST '
                  f'{SPLIT_SOURCES[split]} split',
                  version=str(DETECTION_SET_VERSION)),
        licenses=[],
        images=coco_images,
        annotations=annotations,
        categories=_categories())
    ann_path = os.path.join(root, 'annotations', f'instances_{split}.json')
    with open(ann_path, 'w') as f:
        json.dump(coco, f, separators=(',', ':'))
    return dict(images=num_images, annotations=len(annotations))


def _read_meta(out_dir: str) -> Optional[dict]:
    try:
        with open(os.path.join(out_dir, 'meta.json')) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _is_complete(out_dir: str, params: dict) -> bool:
    """Whether ``out_dir`` holds a whole set made with ``params``."""
    meta = _read_meta(out_dir)
    if meta is None or meta.get('generator') != _GENERATOR \
            or meta.get('params') != params:
        return False
    for split, num in (('train', params['num_train']),
                       ('val', params['num_val'])):
        ann = os.path.join(out_dir, 'annotations', f'instances_{split}.json')
        split_dir = os.path.join(out_dir, split)
        if not os.path.isfile(ann) or not os.path.isdir(split_dir) \
                or len(os.listdir(split_dir)) != num:
            return False
    return True


def _is_replaceable(out_dir: str) -> bool:
    """Only an empty directory or a set of ours may be replaced: anything
    else at ``out_dir`` belongs to someone else."""
    if not os.path.isdir(out_dir) or os.path.islink(out_dir):
        return False
    if not os.listdir(out_dir):
        return True
    meta = _read_meta(out_dir)
    return meta is not None and meta.get('generator') == _GENERATOR


def _set_params(num_train: int, num_val: int, image_size: int, seed: int, object_size: Tuple[int, int],
                num_objects: Tuple[int, int], max_iou: float) -> dict:
    """The checked parameters of a set, as ``meta.json`` records them."""
    if num_train < 0 or num_val < 0:
        raise ValueError('num_train and num_val must be >= 0')
    lo, hi = (int(v) for v in object_size)
    if not 1 <= lo <= hi:
        raise ValueError(f'object_size must be 1 <= min <= max, got {object_size}')
    if lo > image_size:
        raise ValueError(f'object_size min {lo} exceeds image_size {image_size}')
    n_lo, n_hi = (int(v) for v in num_objects)
    if not 1 <= n_lo <= n_hi:
        raise ValueError(f'num_objects must be 1 <= min <= max, got {num_objects}')
    return dict(version=DETECTION_SET_VERSION, num_train=int(num_train),
                num_val=int(num_val), image_size=int(image_size),
                seed=int(seed), object_size=[lo, hi],
                num_objects=[n_lo, n_hi], max_iou=float(max_iou))


def _write_set(tmp: str, num_train: int, num_val: int, params: dict, source_root: Optional[str]) -> None:
    """Write the whole set into the fresh directory ``tmp``, ``meta.json`` last."""
    # mkdtemp makes a private (0700) directory; the set gets the usual
    # permissions of a new directory instead.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    os.makedirs(os.path.join(tmp, 'annotations'))
    counts = {split: _write_split(tmp, split, num, params['seed'], params,
                                  source_root)
              for split, num in (('train', num_train), ('val', num_val))}
    meta = dict(generator=_GENERATOR, params=params,
                classes=list(FASHION_MNIST_CLASSES),
                category_ids='Fashion-MNIST label + 1',
                sources=SPLIT_SOURCES, counts=counts)
    # meta.json is written last: its presence marks a finished set.
    with open(os.path.join(tmp, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=2)


def make_detection_set(out_dir: str,
                       num_train: int,
                       num_val: int,
                       image_size: int = 128,
                       seed: int = 0,
                       object_size: Tuple[int, int] = (20, 64),
                       num_objects: Tuple[int, int] = (1, 4),
                       max_iou: float = 0.1,
                       source_root: Optional[str] = None) -> bool:
    """Compose the detection set at ``out_dir`` unless it is already there.

    Args:
        out_dir: Directory of the set (see the module docstring for layout).
        num_train: Number of train canvases (garments from Fashion-MNIST
            ``train``).
        num_val: Number of val canvases (garments from Fashion-MNIST
            ``test``).
        image_size: Side of the square canvases, in pixels.
        seed: Seed of every random choice; equal arguments give identical
            files.
        object_size: Inclusive range of the side of a pasted garment.
        num_objects: Inclusive range of the garments tried per canvas (a
            garment that finds no place with IoU <= ``max_iou`` is dropped,
            but every canvas keeps at least one).
        max_iou: Largest IoU allowed between two boxes of a canvas.
        source_root: Directory of the Fashion-MNIST IDX files; None means
            ``$FMKT_FASHION_MNIST_ROOT`` or Debian's location.

    Returns:
        True if the set was written, False if a complete set with the same
        parameters was already at ``out_dir`` (nothing is touched then).

    Raises:
        FileExistsError: ``out_dir`` exists and is neither empty nor a set
            made by this function.
        FileNotFoundError: the Fashion-MNIST files are missing.
    """
    params = _set_params(num_train, num_val, image_size, seed, object_size, num_objects, max_iou)
    out_dir = os.path.abspath(out_dir)
    if _is_complete(out_dir, params):
        return False
    if os.path.lexists(out_dir) and not _is_replaceable(out_dir):
        raise FileExistsError(
            f'{out_dir} exists and is not a detection set made by '
            f'{_GENERATOR}; remove it or choose another output directory')

    parent, name = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    # A hidden sibling on the same file system, so the final rename is atomic.
    tmp = tempfile.mkdtemp(prefix=f'.{name}.tmp-', dir=parent)
    try:
        _write_set(tmp, num_train, num_val, params, source_root)
        _move_into_place(tmp, out_dir, params)
    finally:
        # Present only if something failed before (or during) the move.
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def _move_into_place(tmp: str, out_dir: str, params: dict) -> None:
    """Rename the finished ``tmp`` to ``out_dir``, replacing a stale set."""
    old = None
    if os.path.lexists(out_dir):
        old = tmp + '.old'
        os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except OSError:
        # Another process may have finished the same set in the meantime.
        if _is_complete(out_dir, params):
            return
        if old is not None and not os.path.lexists(out_dir):
            os.rename(old, out_dir)
            old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

