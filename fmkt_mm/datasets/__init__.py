"""Datasets: Fashion-MNIST read in place, and a detection set composed from it.

Importing this package registers ``FashionMNISTGz`` in mmpretrain's
``DATASETS`` registry (e.g. via ``custom_imports=dict(imports=['fmkt_mm.datasets'])``).
"""
from .detection_set import (BACKGROUND_MAX, FASHION_DET_METAINFO,
                            make_detection_set, render_canvas)
from .fashion_mnist import FashionMNISTGz, balanced_subset
from .idx import (FASHION_MNIST_CLASSES, FASHION_MNIST_ROOT,
                  FASHION_MNIST_ROOT_ENV, fashion_mnist_paths,
                  fashion_mnist_root, load_fashion_mnist, read_idx)

__all__ = [
    'BACKGROUND_MAX', 'FASHION_DET_METAINFO', 'FASHION_MNIST_CLASSES',
    'FASHION_MNIST_ROOT', 'FASHION_MNIST_ROOT_ENV', 'FashionMNISTGz',
    'balanced_subset', 'fashion_mnist_paths', 'fashion_mnist_root',
    'load_fashion_mnist', 'make_detection_set', 'read_idx', 'render_canvas'
]
