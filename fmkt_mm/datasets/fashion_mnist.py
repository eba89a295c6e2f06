"""Fashion-MNIST for mmpretrain, read in place from the gzipped IDX files."""
from typing import Any, List, Optional, Sequence

import numpy as np
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from .idx import FASHION_MNIST_CLASSES, balanced_subset, fashion_mnist_root, load_fashion_mnist

__all__ = ['FashionMNISTGz', 'balanced_subset']


@DATASETS.register_module()
class FashionMNISTGz(BaseDataset):
    """Fashion-MNIST read in place from its gzipped IDX files.

    Unlike mmpretrain's ``FashionMNIST`` it neither downloads nor expects
    unpacked files: it decodes the ``.gz`` files of Debian's
    ``dataset-fashion-mnist`` package (or of any directory holding the four
    files) where they are, once per process, and can take a deterministic
    class-balanced subset for quick runs.

    Each item is ``dict(img=..., gt_label=...)`` like mmpretrain's ``MNIST``:
    ``img`` is a ``(28, 28)`` uint8 array and ``gt_label`` an int64 scalar
    array in ``0..9``, so ``dict(type='PackInputs')`` yields ``inputs`` of
    shape ``(1, 28, 28)`` uint8 and a ``DataSample`` with ``gt_label``.

    Args:
        data_root: Directory of the four IDX files. None means
            ``$FMKT_FASHION_MNIST_ROOT`` if set, else
            ``/usr/share/datasets/fashion-mnist``.
        split: ``'train'`` (60,000 images) or ``'test'`` (10,000 images).
            None means ``'test'`` if ``test_mode`` else ``'train'``, as in
            mmpretrain's ``MNIST``.
        num_samples: Size of a class-balanced random subset of the split
            (see :func:`balanced_subset`); None keeps the whole split.
        seed: Seed of the subset.
        pipeline: Data transforms.
        test_mode: Whether the dataset is used for testing.
        **kwargs: Other arguments of mmpretrain's ``BaseDataset``
            (``metainfo``, ``indices``, ``serialize_data``, ``lazy_init``...).
    """

    METAINFO = {'classes': FASHION_MNIST_CLASSES}

    def __init__(self,
                 data_root: Optional[str] = None,
                 split: Optional[str] = None,
                 num_samples: Optional[int] = None,
                 seed: int = 0,
                 pipeline: Sequence = (),
                 test_mode: bool = False,
                 **kwargs: Any) -> None:
        if split is None:
            split = 'test' if test_mode else 'train'
        if split not in ('train', 'test'):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if num_samples is not None and num_samples <= 0:
            raise ValueError(f'num_samples must be positive, got {num_samples}')
        self.split = split
        self.num_samples = num_samples
        self.seed = seed
        super().__init__(
            ann_file='',  # images and labels come from the IDX files
            data_root=fashion_mnist_root() if data_root is None else data_root,
            pipeline=pipeline,
            test_mode=test_mode,
            **kwargs)

    def load_data_list(self) -> List[dict]:
        """One ``dict(img=(28, 28) uint8, gt_label=int64)`` per sample."""
        images, labels = load_fashion_mnist(self.split, self.data_root)
        if self.num_samples is None:
            indices = np.arange(len(labels))
        else:
            indices = balanced_subset(labels, self.num_samples, self.seed)
        # Fancy indexing copies out of the cached read-only arrays, so the
        # items are writable and the cache cannot be changed through them.
        images, labels = images[indices], labels[indices].astype(np.int64)
        return [dict(img=img, gt_label=np.array(label, dtype=np.int64))
                for img, label in zip(images, labels)]

    def extra_repr(self) -> List[str]:
        """Lines of ``repr(dataset)`` describing the source."""
        subset = 'all' if self.num_samples is None else \
            f'{self.num_samples} (class-balanced, seed {self.seed})'
        return [f'Data root: \t{self.data_root}', f'Split: \t{self.split}',
                f'Samples: \t{subset}']
