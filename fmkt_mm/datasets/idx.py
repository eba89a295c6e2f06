"""Reading IDX files (the MNIST / Fashion-MNIST container format) into numpy.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then
``ndim`` big-endian uint32 dimension sizes, then the row-major payload. The
files may be gzip-compressed (``.gz``) or not.

Fashion-MNIST is read in place from Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``); the environment variable
``FMKT_FASHION_MNIST_ROOT`` points elsewhere. Decoded splits are cached per
process, so building several datasets from the same split decodes it once.
"""
import gzip
import os
import threading
from typing import Dict, Optional, Tuple

import numpy as np

__all__ = [
    'FASHION_MNIST_ROOT', 'FASHION_MNIST_ROOT_ENV', 'FASHION_MNIST_CLASSES',
    'FASHION_MNIST_FILES', 'fashion_mnist_root', 'fashion_mnist_paths',
    'read_idx', 'load_fashion_mnist', 'balanced_subset'
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the four files.
FASHION_MNIST_ROOT = '/usr/share/datasets/fashion-mnist'
#: Environment variable overriding :data:`FASHION_MNIST_ROOT`.
FASHION_MNIST_ROOT_ENV = 'FMKT_FASHION_MNIST_ROOT'
#: The 10 class names, indexed by the label stored in the label files (the
#: same names and order as mmpretrain's ``FashionMNIST``).
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                         'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
#: ``split -> (images file, labels file)`` inside the data root.
FASHION_MNIST_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}

_INSTALL_HINT = ('install Debian\'s Fashion-MNIST with '
                 '`sudo apt-get install dataset-fashion-mnist` or run '
                 '`bash tools/setup_env.sh`, or point the environment variable '
                 f'{FASHION_MNIST_ROOT_ENV} at a directory holding the four '
                 'Fashion-MNIST IDX files')

# IDX type code -> numpy dtype (multi-byte types are big-endian on disk).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}


def fashion_mnist_root() -> str:
    """The Fashion-MNIST directory: ``$FMKT_FASHION_MNIST_ROOT`` if set, else
    :data:`FASHION_MNIST_ROOT`. Read at call time, not import time."""
    return os.environ.get(FASHION_MNIST_ROOT_ENV) or FASHION_MNIST_ROOT


def fashion_mnist_paths(split: str,
                        root: Optional[str] = None) -> Tuple[str, str]:
    """Paths of the ``(images, labels)`` IDX files of ``split``.

    Args:
        split: ``'train'`` (60,000 images) or ``'test'`` (10,000 images).
        root: Directory of the files; ``None`` means :func:`fashion_mnist_root`.
    """
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f'split must be one of {sorted(FASHION_MNIST_FILES)}, '
                         f'got {split!r}')
    root = fashion_mnist_root() if root is None else root
    return tuple(os.path.join(root, name) for name in FASHION_MNIST_FILES[split])


def _check_exists(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f'IDX file not found: {path}; {_INSTALL_HINT}.')


def read_idx(path: str) -> np.ndarray:
    """Decode one IDX file, gzip-compressed or not (detected from its bytes).

    Args:
        path: The file. A missing file raises :class:`FileNotFoundError`
            naming the path and how to install the data.

    Returns:
        A read-only array with the file's shape and dtype converted to native
        byte order, e.g. ``(N, 28, 28)`` uint8 for images and ``(N,)`` uint8
        for labels.
    """
    _check_exists(path)
    with open(path, 'rb') as f:
        data = f.read()
    if data[:2] == b'\x1f\x8b':  # gzip magic, whatever the file is called
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f'{path} is not an IDX file (bad magic number)')
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES or ndim < 1:
        raise ValueError(f'{path}: unsupported IDX type 0x{type_code:02x} '
                         f'with {ndim} dimensions')
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, '>u4', ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    count = int(np.prod(shape))
    if len(data) - header < count * dtype.itemsize:
        raise ValueError(f'{path} is truncated: header says {shape}, payload '
                         f'holds {(len(data) - header) // dtype.itemsize} items')
    array = np.frombuffer(data, dtype, count, offset=header).reshape(shape)
    if dtype.byteorder == '>':
        array = array.astype(dtype.newbyteorder('='))
    array.flags.writeable = False
    return array


# (abs images path, abs labels path, mtimes, sizes) -> (images, labels)
_CACHE: Dict[tuple, Tuple[np.ndarray, np.ndarray]] = {}
_CACHE_LOCK = threading.Lock()


def load_fashion_mnist(split: str,
                       root: Optional[str] = None
                       ) -> Tuple[np.ndarray, np.ndarray]:
    """Images and labels of one Fashion-MNIST split, decoded once per process.

    Args:
        split: ``'train'`` or ``'test'``.
        root: Directory of the IDX files; ``None`` means
            :func:`fashion_mnist_root`.

    Returns:
        ``(images, labels)``: read-only uint8 arrays of shapes ``(N, 28, 28)``
        and ``(N,)`` with labels in ``0..9`` (see
        :data:`FASHION_MNIST_CLASSES`); N is 60,000 for ``'train'`` and
        10,000 for ``'test'``. Copy them before modifying.
    """
    paths = tuple(os.path.abspath(p) for p in fashion_mnist_paths(split, root))
    for path in paths:
        _check_exists(path)
    # The files' mtimes and sizes are part of the key so that a changed file
    # is decoded again rather than served stale.
    stats = tuple((os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths)
    key = paths + stats
    with _CACHE_LOCK:
        if key not in _CACHE:
            images, labels = read_idx(paths[0]), read_idx(paths[1])
            if images.ndim != 3 or labels.ndim != 1 \
                    or len(images) != len(labels):
                raise ValueError(
                    f'{paths[0]} and {paths[1]} do not form an image/label '
                    f'pair: shapes {images.shape} and {labels.shape}')
            if images.dtype != np.uint8 or labels.dtype != np.uint8:
                raise ValueError(f'expected uint8 IDX files in {split!r}, '
                                 f'got {images.dtype} and {labels.dtype}')
            _CACHE[key] = (images, labels)
        return _CACHE[key]


def balanced_subset(labels: np.ndarray, num_samples: int,
                    seed: int = 0) -> np.ndarray:
    """Indices of a class-balanced random subset, the same for the same seed.

    Classes take turns, each giving its next not yet chosen sample in a
    seeded random order, so per-class counts differ by at most one (as long
    as no class runs out; lower labels get the remainder).

    Args:
        labels: ``(N,)`` integer labels.
        num_samples: Size of the subset; ``>= N`` selects everything.
        seed: Seed of the random order within each class.

    Returns:
        ``(min(num_samples, N),)`` int64 indices into ``labels``, ascending.
    """
    labels = np.asarray(labels).astype(np.int64)
    n = len(labels)
    if num_samples >= n:
        return np.arange(n, dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(n)
    # Group the shuffled indices by class, keeping the shuffled order inside
    # each class, then rank every sample within its class.
    order = np.argsort(labels[perm], kind='stable')
    grouped, grouped_labels = perm[order], labels[perm][order]
    rank = np.arange(n) - np.searchsorted(grouped_labels, grouped_labels)
    # Round robin over classes: all rank-0 samples first, then rank 1, ...
    turn = rank * (int(labels.max()) + 1) + grouped_labels
    chosen = grouped[np.argsort(turn, kind='stable')[:num_samples]]
    return np.sort(chosen)
