"""Datasets: Fashion-MNIST read in place, and a detection set composed from it.

Importing this package registers ``FashionMNISTGz`` in mmpretrain's
``DATASETS`` registry (e.g. via ``custom_imports=dict(imports=['fmkt_mm.datasets'])``)
when mmpretrain is installed; detection-only environments get the rest.
"""
from .detection_set import BACKGROUND_MAX, FASHION_DET_METAINFO, make_detection_set, render_canvas
from .idx import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ROOT,
    FASHION_MNIST_ROOT_ENV,
    balanced_subset,
    fashion_mnist_paths,
    fashion_mnist_root,
    load_fashion_mnist,
    read_idx,
)
from .segmentation_set import FASHION_SEG_METAINFO, make_segmentation_set

try:
    from .fashion_mnist import FashionMNISTGz  # noqa: F401 (registers it in mmpretrain)
except ImportError as err:  # mmpretrain is not installed (a detection-only environment)
    if 'mmpretrain' not in str(err):
        raise

__all__ = [
    'BACKGROUND_MAX', 'FASHION_DET_METAINFO', 'FASHION_MNIST_CLASSES',
    'FASHION_MNIST_ROOT', 'FASHION_MNIST_ROOT_ENV',
    'balanced_subset', 'fashion_mnist_paths', 'fashion_mnist_root',
    'load_fashion_mnist', 'make_detection_set', 'read_idx', 'render_canvas', 'FASHION_SEG_METAINFO',
    'make_segmentation_set'
]
if 'FashionMNISTGz' in globals():
    __all__.append('FashionMNISTGz')
