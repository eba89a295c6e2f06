"""Lets PyPI's torchvision (a CUDA build) import beside a CPU-only torch.

torchvision registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` at import time. Its compiled library, which defines their
schemas, cannot load next to a CPU torch, so the import fails with
``RuntimeError: operator torchvision::nms does not exist``. Defining the two
schemas before torchvision is first imported is enough for its Python side
(transforms, datasets, ops written in Python) to work; the compiled ops stay
unavailable, and mmcv's own ops replace them.

``tools/setup_env.sh`` copies this file into the environment's site-packages
with a ``.pth`` line that calls :func:`install`, so every interpreter of the
environment gets it, including processes that never import fmkt_mm.
"""
import importlib.abc
import sys

_SCHEMA = '(Tensor dets, Tensor scores, float iou_threshold) -> Tensor'


def _define_missing_schemas():
    import torch

    if torch.version.cuda is not None or torch.version.hip is not None:
        return  # a GPU build of torch loads torchvision's library itself
    for name in ('nms', 'qnms'):
        if not torch._C._dispatch_has_kernel(f'torchvision::{name}') and \
                not _schema_exists(torch, name):
            torch.library.define(f'torchvision::{name}', _SCHEMA)


def _schema_exists(torch, name):
    try:
        torch._C._get_schema(f'torchvision::{name}', '')
        return True
    except RuntimeError:
        return False


class _BeforeTorchvision(importlib.abc.MetaPathFinder):

    def find_spec(self, fullname, path=None, target=None):
        if fullname == 'torchvision':
            sys.meta_path.remove(self)
            _define_missing_schemas()
        return None  # the normal finders import torchvision itself


def install():
    if 'torchvision' not in sys.modules and not any(
            isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())
