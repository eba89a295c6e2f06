"""Checkpoints of the stock OpenMMLab tools load safely, with no opt-in.

A checkpoint written by a plain MMEngine ``Runner`` (what mmpretrain's and
mmdet's ``tools/train.py`` run) holds, besides the weights, the message hub's
``HistoryBuffer`` records, numpy arrays and scalars, optimizer and scheduler
states. ``torch.load(weights_only=True)`` refuses those; the project's loader
rebuilds them from a data-only allow-list, and still refuses anything else
without running it.
"""
import os.path as osp
import pickle
import uuid

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import fmkt_mm  # noqa: F401  (routes MMEngine's local loader through the policy)
from fmkt_mm.checkpoint import UnsafeCheckpointError, safe_torch_load, unsafe_globals
from tiny_runs import CLS_CONFIGS, Payload, plain_model, tiny_cfg

TEACHER_CONFIG = osp.join(CLS_CONFIGS, 'teacher_resnet18_w16.py')


def stock_cfg(work_dir, by_epoch=True, ema=False):
    """The Fashion-MNIST teacher config as a user runs it with the stock tools:
    a plain Runner with MMEngine's default CheckpointHook, on 8 images."""
    cfg = Config.fromfile(TEACHER_CONFIG)
    cfg.train_dataloader.batch_size = 4
    cfg.train_dataloader.dataset.num_samples = 8
    for loader in ('val_dataloader', 'test_dataloader'):
        cfg[loader].batch_size = 8
        cfg[loader].dataset.num_samples = 8
    if by_epoch:
        cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=100)
    else:
        cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=1000)
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=2, by_epoch=False)
        cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2)]
        cfg.log_processor = dict(by_epoch=False)
    if ema:
        cfg.custom_hooks = [dict(type='EMAHook', momentum=0.5)]
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'stock-{uuid.uuid4().hex[:8]}'
    return cfg


@pytest.fixture(scope='module', params=['epoch', 'iter-ema'])
def stock_checkpoint(request, tmp_path_factory):
    """``(path, model state_dict)`` of a checkpoint written by a plain Runner."""
    work_dir = tmp_path_factory.mktemp(f'stock-{request.param}')
    by_epoch = request.param == 'epoch'
    runner = Runner.from_cfg(stock_cfg(work_dir, by_epoch=by_epoch, ema=not by_epoch))
    runner.train()
    path = str(work_dir / ('epoch_1.pth' if by_epoch else 'iter_2.pth'))
    return path, torch.load(path, weights_only=False)['state_dict']


def test_a_stock_runner_checkpoint_loads_with_no_opt_in(stock_checkpoint):
    path, expected = stock_checkpoint
    with pytest.raises(pickle.UnpicklingError):  # what plain weights_only loading says
        torch.load(path, weights_only=True)
    checkpoint = safe_torch_load(path)
    assert {'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'} <= set(checkpoint)
    if path.endswith('iter_2.pth'):  # the EMAHook's run
        assert 'ema_state_dict' in checkpoint
    assert set(checkpoint['state_dict']) == set(expected)
    for key, value in expected.items():  # the weights come out exactly
        assert torch.equal(checkpoint['state_dict'][key], value), key
    scalars = checkpoint['message_hub']['log_scalars']
    assert scalars['train/loss'].current() == pytest.approx(scalars['train/loss'].data[0][-1])
    assert unsafe_globals(path) == []


def test_a_stock_checkpoint_is_a_teacher(stock_checkpoint, tmp_path):
    path, expected = stock_checkpoint
    runner = Runner.from_cfg(tiny_cfg('fmkt', tmp_path, path))
    teacher = runner.model.teacher.state_dict()
    for key, value in expected.items():
        assert torch.equal(teacher[key], value), key


def test_a_stock_checkpoint_as_load_from_and_resume_from_another_directory(stock_checkpoint, tmp_path):
    path, expected = stock_checkpoint
    cfg = stock_cfg(tmp_path / 'load', by_epoch=path.endswith('epoch_1.pth'))
    cfg.load_from = path
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    for key, value in expected.items():
        assert torch.equal(runner.model.state_dict()[key], value), key

    cfg = stock_cfg(tmp_path / 'resume', by_epoch=path.endswith('epoch_1.pth'))
    cfg.load_from, cfg.resume = path, True
    if cfg.train_cfg.get('by_epoch'):
        cfg.train_cfg.max_epochs = 2
    else:
        cfg.train_cfg.max_iters = 3
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == (4 if cfg.train_cfg.get('by_epoch') else 3)  # continued, not restarted


def test_a_stock_checkpoint_is_a_pretrained_backbone(stock_checkpoint):
    path, expected = stock_checkpoint
    model = plain_model('teacher_resnet18_w16.py')
    model.backbone.init_cfg = dict(type='Pretrained', checkpoint=path, prefix='backbone.')
    model.backbone.init_weights()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, expected['backbone.' + key]), key


def test_a_model_zoo_shaped_file_loads(tmp_path):
    model = plain_model('teacher_resnet18_w16.py')
    path = str(tmp_path / 'zoo.pth')
    torch.save(dict(meta=dict(mmpretrain_version='1.2.0', config='model = dict(...)\n',
                              dataset_meta=dict(classes=('a', 'b')), CLASSES=['a', 'b'], epoch=100,
                              hook_msgs=dict(last_ckpt='x')),
                    state_dict=model.state_dict()), path)
    checkpoint = safe_torch_load(path)
    assert checkpoint['meta']['dataset_meta']['classes'] == ('a', 'b')


@pytest.fixture
def evil(tmp_path):
    """A checkpoint whose unpickling would create a file."""
    Payload.marker = str(tmp_path / 'payload-ran')
    path = str(tmp_path / 'evil.pth')
    model = plain_model('teacher_resnet18_w16.py')
    torch.save({'state_dict': model.state_dict(), 'meta': {'x': Payload()}}, path)
    yield path
    assert not osp.exists(Payload.marker), 'the payload ran'


def test_an_unsafe_file_is_refused_naming_its_globals(evil):
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_torch_load(evil, what='teacher checkpoint')
    message = str(info.value)
    assert 'posix.system' in message or 'os.system' in message
    assert 'allow_unsafe_pickle=True' in message


@pytest.mark.parametrize('use', ['load_from', 'resume', 'pretrained'])
def test_an_unsafe_file_is_refused_everywhere_it_can_be_given(evil, use, tmp_path):
    if use == 'pretrained':
        model = plain_model('teacher_resnet18_w16.py')
        model.backbone.init_cfg = dict(type='Pretrained', checkpoint=evil, prefix='backbone.')
        with pytest.raises(UnsafeCheckpointError, match='system'):
            model.backbone.init_weights()
        return
    cfg = stock_cfg(tmp_path / 'run')
    cfg.load_from, cfg.resume = evil, use == 'resume'
    runner = Runner.from_cfg(cfg)
    with pytest.raises(UnsafeCheckpointError, match='system'):
        runner.load_or_resume()


# -- checkpoints by URL ----------------------------------------------------------------------


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """``(serve(name, path) -> url, requests)``: files served on 127.0.0.1, the
    torch hub cache in a temporary directory, and the count of requests."""
    import functools
    import http.server
    import shutil
    import threading
    root = tmp_path / 'served'
    root.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                             functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))

    def serve(name, path):
        shutil.copy(path, root / name)
        return f'http://127.0.0.1:{server.server_address[1]}/{name}'
    yield serve, requests
    server.shutdown()


def test_a_teacher_by_url_downloads_once_and_loads_as_a_local_file(http_server, stock_checkpoint,
                                                                   tmp_path):
    from fmkt_mm.storage import CorruptCheckpointError, sha256_of
    serve, requests = http_server
    path, expected = stock_checkpoint
    digest = sha256_of(path)
    url = serve(f'teacher_20260101-{digest[:8]}.pth', path)
    for run in ('first', 'cached'):
        runner = Runner.from_cfg(tiny_cfg('fmkt', tmp_path / run, url))
        teacher = runner.model.teacher.state_dict()
        assert all(torch.equal(teacher[k], v) for k, v in expected.items())
    assert len(requests) == 1  # the second run read the hub cache
    assert osp.isfile(osp.join(torch.hub.get_dir(), 'checkpoints', f'teacher_20260101-{digest[:8]}.pth'))
    wrong = serve('teacher_20260101-deadbeef.pth', path)
    with pytest.raises(CorruptCheckpointError, match='hash prefix'):
        Runner.from_cfg(tiny_cfg('fmkt', tmp_path / 'wrong', wrong))


def test_a_payload_teacher_by_url_is_refused_and_never_runs(http_server, evil, tmp_path):
    serve, _ = http_server
    url = serve('evil.pth', evil)
    with pytest.raises(UnsafeCheckpointError, match="system.*allow_unsafe_pickle=True in the teacher's dict"):
        Runner.from_cfg(tiny_cfg('fmkt', tmp_path / 'run', url))
