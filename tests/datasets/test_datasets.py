"""Tests of fmkt_mm.datasets: the IDX reader, FashionMNISTGz and the detection
set composed from Fashion-MNIST. They read Debian's Fashion-MNIST in place and
are skipped, saying why, where it is not installed."""
import gzip
import json
import os
import re

import numpy as np
import pytest

from fmkt_mm.datasets import detection_set as det
from fmkt_mm.datasets.idx import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ROOT_ENV,
    fashion_mnist_paths,
    fashion_mnist_root,
    load_fashion_mnist,
    read_idx,
)


def _have_fashion_mnist() -> bool:
    return all(os.path.isfile(p) for split in ('train', 'test')
               for p in fashion_mnist_paths(split))


needs_data = pytest.mark.skipif(
    not _have_fashion_mnist(),
    reason=f'Fashion-MNIST not found in {fashion_mnist_root()} (install '
    "Debian's dataset-fashion-mnist or set $FMKT_FASHION_MNIST_ROOT)")


def _idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    """Encode an array as an IDX file (big-endian header and payload)."""
    header = bytes([0, 0, type_code, array.ndim])
    header += np.array(array.shape, dtype='>u4').tobytes()
    return header + array.astype(array.dtype.newbyteorder('>')).tobytes()


# ----------------------------------------------------------------- IDX reader


def test_read_idx_plain_gzipped_and_big_endian(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / 'images').write_bytes(_idx_bytes(images, 0x08))
    (tmp_path / 'images.gz').write_bytes(gzip.compress(_idx_bytes(images, 0x08)))
    values = np.array([1, -2, 300], dtype=np.int32)
    (tmp_path / 'values').write_bytes(_idx_bytes(values, 0x0C))

    for name in ('images', 'images.gz'):
        out = read_idx(str(tmp_path / name))
        assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
        np.testing.assert_array_equal(out, images)
    out = read_idx(str(tmp_path / 'values'))
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, values)


def test_read_idx_errors(tmp_path):
    missing = tmp_path / 'nowhere' / 'train-images-idx3-ubyte.gz'
    with pytest.raises(FileNotFoundError) as err:
        read_idx(str(missing))
    assert str(missing) in str(err.value)
    assert 'apt-get install dataset-fashion-mnist' in str(err.value)
    assert 'tools/setup_env.sh' in str(err.value)

    (tmp_path / 'bad').write_bytes(b'\x01\x02\x08\x01' + b'\0' * 8)
    with pytest.raises(ValueError, match='not an IDX file'):
        read_idx(str(tmp_path / 'bad'))
    truncated = _idx_bytes(np.zeros((4, 2), np.uint8), 0x08)[:-3]
    (tmp_path / 'short').write_bytes(truncated)
    with pytest.raises(ValueError, match='truncated'):
        read_idx(str(tmp_path / 'short'))


def test_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(FASHION_MNIST_ROOT_ENV, str(tmp_path))
    assert fashion_mnist_root() == str(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        load_fashion_mnist('train')
    monkeypatch.delenv(FASHION_MNIST_ROOT_ENV)
    assert fashion_mnist_root() == '/usr/share/datasets/fashion-mnist'
    with pytest.raises(ValueError, match='split'):
        fashion_mnist_paths('val')


@needs_data
def test_read_fashion_mnist():
    train_images, train_labels = fashion_mnist_paths('train')
    images, labels = read_idx(train_images), read_idx(train_labels)
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000, ) and labels.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels), [6000] * 10)

    test_images, test_labels = load_fashion_mnist('test')
    assert test_images.shape == (10000, 28, 28)
    assert test_labels.shape == (10000, )
    # Decoded once per process: the second call returns the same arrays.
    assert load_fashion_mnist('test')[0] is test_images
    assert not test_images.flags.writeable


# ------------------------------------------------------------ FashionMNISTGz


def test_balanced_subset():
    from fmkt_mm.datasets import balanced_subset
    labels = np.repeat(np.arange(10), 50)
    np.random.default_rng(1).shuffle(labels)
    subset = balanced_subset(labels, 95, seed=3)
    assert len(subset) == 95 and len(np.unique(subset)) == 95
    assert np.all(np.diff(subset) > 0)
    counts = np.bincount(labels[subset], minlength=10)
    assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(subset, balanced_subset(labels, 95, seed=3))
    assert not np.array_equal(subset, balanced_subset(labels, 95, seed=4))
    np.testing.assert_array_equal(balanced_subset(labels, 10**6), np.arange(500))


@pytest.fixture(scope='module')
def mmpretrain_datasets():
    pytest.importorskip('mmpretrain', reason='mmpretrain is not installed')
    from mmpretrain.registry import DATASETS

    import fmkt_mm.datasets  # noqa: F401  (registers FashionMNISTGz)
    return DATASETS


@needs_data
def test_fashion_mnist_gz_items(mmpretrain_datasets):
    from fmkt_mm.datasets import FashionMNISTGz
    ds = FashionMNISTGz(num_samples=100, seed=0)
    again = mmpretrain_datasets.build(
        dict(type='FashionMNISTGz', num_samples=100, seed=0))
    assert isinstance(again, FashionMNISTGz)
    assert len(ds) == len(again) == 100
    assert ds.metainfo['classes'] == FASHION_MNIST_CLASSES

    labels = np.array([int(ds.get_data_info(i)['gt_label']) for i in range(100)])
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [10] * 10)
    for i in range(100):
        a, b = ds.get_data_info(i), again.get_data_info(i)
        # The same items as mmpretrain's MNIST: (28, 28) uint8, int64 label.
        assert a['img'].shape == (28, 28) and a['img'].dtype == np.uint8
        assert a['gt_label'].dtype == np.int64
        np.testing.assert_array_equal(a['img'], b['img'])
        assert int(a['gt_label']) == int(b['gt_label'])

    # Every item is a real sample of the split, with its own label.
    images, source_labels = load_fashion_mnist('train')
    first = ds.get_data_info(0)
    hits = np.flatnonzero((images == first['img']).all(axis=(1, 2)))
    assert int(first['gt_label']) in source_labels[hits]

    other = FashionMNISTGz(num_samples=100, seed=1)
    assert not all(
        np.array_equal(ds.get_data_info(i)['img'], other.get_data_info(i)['img'])
        for i in range(100))


@needs_data
def test_fashion_mnist_gz_pipeline(mmpretrain_datasets):
    ds = mmpretrain_datasets.build(
        dict(type='FashionMNISTGz', split='test', num_samples=20,
             pipeline=[dict(type='RandomCrop', crop_size=28, padding=2),
                       dict(type='RandomFlip', prob=0.5, direction='horizontal'),
                       dict(type='PackInputs')]))
    assert ds.split == 'test' and len(ds) == 20
    for i in range(3):
        item = ds[i]
        assert tuple(item['inputs'].shape) == (1, 28, 28)
        assert str(item['inputs'].dtype) == 'torch.uint8'
        label = item['data_samples'].gt_label
        assert label.shape == (1, ) and 0 <= int(label) <= 9

    # test_mode picks the test split, as in mmpretrain's MNIST.
    plain = mmpretrain_datasets.build(
        dict(type='FashionMNISTGz', test_mode=True, num_samples=10,
             pipeline=[dict(type='PackInputs')]))
    assert plain.split == 'test'
    item = plain[0]
    np.testing.assert_array_equal(item['inputs'][0].numpy(),
                                  plain.get_data_info(0)['img'])


def test_fashion_mnist_gz_bad_arguments(mmpretrain_datasets):
    from fmkt_mm.datasets import FashionMNISTGz
    with pytest.raises(ValueError, match='split'):
        FashionMNISTGz(split='val', lazy_init=True)
    with pytest.raises(ValueError, match='num_samples'):
        FashionMNISTGz(num_samples=0, lazy_init=True)


# ----------------------------------------------------------- detection set

SMALL = dict(num_train=6, num_val=3, image_size=64, seed=0)


def _read_png(path):
    import cv2
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image[..., ::-1]  # BGR -> RGB


def _tree(root):
    """``relative path -> bytes`` of every file under ``root``."""
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


@pytest.fixture(scope='module')
def small_set(tmp_path_factory):
    if not _have_fashion_mnist():
        pytest.skip(f'Fashion-MNIST not found in {fashion_mnist_root()}')
    out = tmp_path_factory.mktemp('det') / 'fashion_det'
    assert det.make_detection_set(str(out), **SMALL) is True
    return out


def test_detection_set_layout_and_coco(small_set):
    from pycocotools.coco import COCO
    assert sorted(os.listdir(small_set)) == ['annotations', 'meta.json', 'train',
                                             'val']
    # No temporary siblings are left next to the output.
    assert os.listdir(small_set.parent) == [small_set.name]
    for split, num in (('train', 6), ('val', 3)):
        ann_file = small_set / 'annotations' / f'instances_{split}.json'
        coco = COCO(str(ann_file))
        assert len(coco.getImgIds()) == num
        assert sorted(os.listdir(small_set / split)) == [
            f'{i:06d}.png' for i in range(1, num + 1)]
        cats = coco.loadCats(coco.getCatIds())
        assert [c['id'] for c in cats] == list(range(1, 11))
        assert tuple(c['name'] for c in cats) == FASHION_MNIST_CLASSES
        for img in coco.loadImgs(coco.getImgIds()):
            assert img['width'] == img['height'] == 64
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img['id']))
            assert 1 <= len(anns) <= 4
            for ann in anns:
                x, y, w, h = ann['bbox']
                assert x >= 0 and y >= 0 and w > 0 and h > 0
                assert x + w <= 64 and y + h <= 64
                assert ann['area'] == w * h and ann['iscrowd'] == 0
                assert 1 <= ann['category_id'] <= 10
    meta = json.loads((small_set / 'meta.json').read_text())
    assert meta['params']['num_train'] == 6 and meta['params']['seed'] == 0


def test_detection_set_boxes_match_pixels(small_set):
    from pycocotools.coco import COCO
    for split in ('train', 'val'):
        coco = COCO(str(small_set / 'annotations' / f'instances_{split}.json'))
        for img in coco.loadImgs(coco.getImgIds()):
            canvas = _read_png(small_set / split / img['file_name'])
            assert canvas.shape == (64, 64, 3) and canvas.dtype == np.uint8
            bright = canvas.max(axis=2) > det.BACKGROUND_MAX
            covered = np.zeros_like(bright)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
                x, y, w, h = ann['bbox']
                covered[y:y + h, x:x + w] = True
                # The visible part of the garment spans (nearly) its box.
                ys, xs = np.nonzero(bright[y:y + h, x:x + w])
                assert len(xs), ann
                seen_w = xs.max() - xs.min() + 1
                seen_h = ys.max() - ys.min() + 1
                assert seen_w * seen_h >= 0.6 * w * h, (ann, seen_w, seen_h)
            # Nothing but the background outside the boxes.
            assert not (bright & ~covered).any()


def test_detection_set_masks_are_the_garments_pixels(small_set):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    coco = COCO(str(small_set / 'annotations' / 'instances_train.json'))
    for img in coco.loadImgs(coco.getImgIds()):
        canvas = _read_png(small_set / 'train' / img['file_name'])
        bright = canvas.max(axis=2) > det.BACKGROUND_MAX
        union = np.zeros_like(bright)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
            mask = mask_utils.decode(ann['segmentation']).astype(bool)
            x, y, w, h = ann['bbox']
            ys, xs = np.nonzero(mask)  # the mask's tight box is the box
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
            assert coco.annToMask(ann).sum() == mask.sum()
            union |= mask
        assert not (bright & ~union).any()  # every bright pixel is some garment's


def test_detection_set_mmdet_coco_dataset(small_set):
    pytest.importorskip('mmdet', reason='mmdet is not installed')
    from mmdet.datasets import CocoDataset
    ds = CocoDataset(
        data_root=str(small_set), ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'), metainfo=det.FASHION_DET_METAINFO,
        pipeline=[])
    assert len(ds) == 6
    coco = json.loads(
        (small_set / 'annotations' / 'instances_train.json').read_text())
    first = ds[0]
    assert first['img_path'] == os.path.join(str(small_set), 'train', '000001.png')
    anns = [a for a in coco['annotations'] if a['image_id'] == first['img_id']]
    assert len(first['instances']) == len(anns)
    for inst, ann in zip(first['instances'], anns):
        x, y, w, h = ann['bbox']
        assert inst['bbox'] == [x, y, x + w, y + h]
        # mmdet's label is the Fashion-MNIST label (category id - 1).
        assert inst['bbox_label'] == ann['category_id'] - 1


def test_detection_set_deterministic_and_idempotent(small_set, tmp_path):
    other = tmp_path / 'again'
    assert det.make_detection_set(str(other), **SMALL) is True
    assert _tree(other) == _tree(small_set)

    # A second call with the same parameters touches nothing.
    before = {p: os.stat(os.path.join(other, p)).st_mtime_ns for p in _tree(other)}
    assert det.make_detection_set(str(other), **SMALL) is False
    after = {p: os.stat(os.path.join(other, p)).st_mtime_ns for p in _tree(other)}
    assert before == after

    # Other parameters replace the set, and another seed gives other images.
    assert det.make_detection_set(str(other), **dict(SMALL, seed=1)) is True
    assert json.loads((other / 'meta.json').read_text())['params']['seed'] == 1
    assert (other / 'train' / '000001.png').read_bytes() != \
        (small_set / 'train' / '000001.png').read_bytes()
    assert sorted(os.listdir(tmp_path)) == ['again']


def test_detection_set_failure_leaves_nothing(monkeypatch, tmp_path):
    if not _have_fashion_mnist():
        pytest.skip(f'Fashion-MNIST not found in {fashion_mnist_root()}')
    real_write = det._write_png
    calls = []

    def failing_write(path, rgb):
        if len(calls) == 2:
            raise RuntimeError('disk full')
        calls.append(path)
        real_write(path, rgb)

    monkeypatch.setattr(det, '_write_png', failing_write)
    with pytest.raises(RuntimeError, match='disk full'):
        det.make_detection_set(str(tmp_path / 'out'), **SMALL)
    assert os.listdir(tmp_path) == []

    # A failure while replacing an older set keeps the older set.
    monkeypatch.setattr(det, '_write_png', real_write)
    det.make_detection_set(str(tmp_path / 'out'), **SMALL)
    old = _tree(tmp_path / 'out')
    calls.clear()
    monkeypatch.setattr(det, '_write_png', failing_write)
    with pytest.raises(RuntimeError, match='disk full'):
        det.make_detection_set(str(tmp_path / 'out'), **dict(SMALL, seed=5))
    assert os.listdir(tmp_path) == ['out'] and _tree(tmp_path / 'out') == old


def test_detection_set_refuses_foreign_directory(tmp_path):
    foreign = tmp_path / 'mine'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('keep me')
    with pytest.raises(FileExistsError):
        det.make_detection_set(str(foreign), **SMALL)
    assert (foreign / 'notes.txt').read_text() == 'keep me'
    assert os.listdir(tmp_path) == ['mine']
