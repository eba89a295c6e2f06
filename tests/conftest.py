"""Shared fixtures: the tiny teachers and the tiny COCO set, made once per session."""
import pytest
import torch
from mmengine.registry import DefaultScope

from tiny_runs import SIZE, plain_model, retinanet


@pytest.fixture(autouse=True)
def no_leaked_default_scope():
    """Each test starts without a default scope: a Runner built by an earlier
    test sets one process-wide, which changes where unscoped names resolve."""
    DefaultScope._instance_dict.clear()
    yield
    DefaultScope._instance_dict.clear()


@pytest.fixture(scope='module', autouse=True)
def one_thread(request):
    """Modules that set ``ONE_THREAD = True`` (tiny models) run on one torch
    thread: faster for them, and immune to other jobs on the cores."""
    if not getattr(request.module, 'ONE_THREAD', False):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def teacher_checkpoint(tmp_path_factory):
    """A Fashion-MNIST teacher (ResNet-18 w16, untrained) as a plain state_dict."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    torch.save(plain_model('teacher_resnet18_w16.py').state_dict(), path)
    return str(path)


@pytest.fixture(scope='session')
def teacher_w8_checkpoint(tmp_path_factory):
    """A second Fashion-MNIST teacher of another width (ResNet-18 w8, untrained)."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp('teacher_w8') / 'teacher_w8.pth'
    torch.save(plain_model('teacher_resnet18_w8.py').state_dict(), path)
    return str(path)


@pytest.fixture(scope='session')
def det_teacher(tmp_path_factory):
    """``(model config, checkpoint)`` of a tiny RetinaNet teacher (32-channel FPN)."""
    pytest.importorskip('mmdet')
    from mmdet.utils import register_all_modules
    from mmengine.registry import MODELS
    register_all_modules(init_default_scope=False)
    model = retinanet(16, 32)
    path = str(tmp_path_factory.mktemp('det_teacher') / 'retinanet.pth')
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.save(MODELS.build(model).state_dict(), path)
    return model, path


@pytest.fixture(scope='session')
def coco_set(tmp_path_factory):
    """A COCO-format set of 4 training and 2 validation images of SIZE px."""
    from fmkt_mm.datasets import make_detection_set
    root = str(tmp_path_factory.mktemp('fashion_det'))
    make_detection_set(root, num_train=4, num_val=2, image_size=SIZE, object_size=(16, 32))
    return root
