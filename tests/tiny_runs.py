"""Tiny models and shrunk configs for tests that run MMEngine's Runner
(classification on Fashion-MNIST, detection on a composed COCO set)."""
import copy
import os.path as osp

from mmengine.config import Config
from mmengine.registry import DefaultScope

from fmkt_mm import experiment
from fmkt_mm.distill.teacher import build_model

#: the tests folder (its helpers are importable from there) and the project root
TESTS = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(TESTS)
CLS_CONFIGS = osp.join(ROOT, 'configs', 'fashion_mnist')
DET_CONFIGS = osp.join(ROOT, 'configs', 'fashion_det')
VARIANT_CONFIGS = dict(fmkt='fmkt_resnet18_w16_to_resnet18_w4.py',
                       fmkt_theta='fmkt_theta_resnet18_w16_to_resnet18_w4.py',
                       ofmkt='ofmkt_resnet18_w4.py')
#: image size of the detection tests
SIZE = 64


# -- classification ------------------------------------------------------------------


def plain_model(config_name, **head):
    """The plain mmpretrain model of a Fashion-MNIST config (``head`` overrides)."""
    cfg = Config.fromfile(osp.join(CLS_CONFIGS, config_name))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.head.update(head)
    model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return build_model(model_cfg, 'mmpretrain')


def tiny_cfg(variant, work_dir, teacher_checkpoint, max_epochs=1, max_iters=None):
    """A Fashion-MNIST distillation config on 8 training images (2
    iterations per epoch), ready for ``Runner.from_cfg``. ``max_iters``
    switches to an iteration-based loop with a checkpoint every iteration."""
    cfg = experiment.load(osp.join(CLS_CONFIGS, VARIANT_CONFIGS[variant]))
    cfg.train_dataloader.batch_size = 4
    cfg.train_dataloader.dataset.num_samples = 8  # 2 iterations per epoch
    for loader in ('val_dataloader', 'test_dataloader'):
        cfg[loader].batch_size = 8
        cfg[loader].dataset.num_samples = 16
    cfg.train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=100)
    if max_iters is not None:
        cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=1000)
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, by_epoch=False)
        cfg.log_processor = dict(by_epoch=False)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.randomness = dict(seed=0, deterministic=True)
    experiment.set_teacher(cfg, teacher_checkpoint)
    return experiment.finalize(cfg, 'tiny', str(work_dir))


# -- detection -----------------------------------------------------------------------


def retinanet(width: int, fpn: int) -> dict:
    """The demo's RetinaNet with a ResNet-18 of base width ``width`` and an
    FPN of ``fpn`` channels; scores every box so COCO eval has detections."""
    model = copy.deepcopy(Config.fromfile(osp.join(DET_CONFIGS, 'retinanet_r18_teacher.py')).model)
    model.backbone.update(base_channels=width, stem_channels=width)
    model.neck.update(in_channels=[2 * width, 4 * width, 8 * width], out_channels=fpn)
    model.bbox_head.update(in_channels=fpn, feat_channels=fpn)
    model.test_cfg.update(score_thr=0.0, max_per_img=20)
    return model


def fcos(width: int, fpn: int) -> dict:
    """The FCOS teacher config's model at base width ``width`` and ``fpn`` channels."""
    model = copy.deepcopy(Config.fromfile(osp.join(DET_CONFIGS, 'fcos_r18_teacher.py')).model)
    model.backbone.update(base_channels=width, stem_channels=width)
    model.neck.update(in_channels=[2 * width, 4 * width, 8 * width], out_channels=fpn)
    model.bbox_head.update(in_channels=fpn, feat_channels=fpn)
    model.test_cfg.update(score_thr=0.0, max_per_img=20)
    return model


def faster_rcnn(width: int, fpn: int, config: str = 'faster-rcnn_r18_teacher.py') -> dict:
    """A two-stage teacher config's model at base width ``width``, ``fpn`` channels."""
    model = copy.deepcopy(Config.fromfile(osp.join(DET_CONFIGS, config)).model)
    model.backbone.update(base_channels=width, stem_channels=width)
    model.neck.update(in_channels=[width, 2 * width, 4 * width, 8 * width], out_channels=fpn)
    model.rpn_head.update(in_channels=fpn, feat_channels=fpn)
    model.roi_head.bbox_roi_extractor.update(out_channels=fpn)
    model.roi_head.bbox_head.update(in_channels=fpn, fc_out_channels=32)
    model.test_cfg.rcnn.update(score_thr=0.0)
    return model


def mask_rcnn(width: int, fpn: int) -> dict:
    """:func:`faster_rcnn` of the Mask R-CNN teacher config, its mask branch shrunk too."""
    model = faster_rcnn(width, fpn, 'mask-rcnn_r18_teacher.py')
    model.roi_head.mask_roi_extractor.update(out_channels=fpn)
    model.roi_head.mask_head.update(in_channels=fpn, conv_out_channels=16)
    return model


def runner_config(config: str, work_dir: str, data_root: str, student: dict, teacher,
                  max_iters: int = 2, **distiller_args) -> Config:
    """A fashion_det config shrunk to tiny models, 64 px and ``max_iters``."""
    cfg = experiment.point_detection(experiment.load(osp.join(DET_CONFIGS, config)), data_root, 1)
    cfg.model = student
    if 'distiller' in cfg:
        model, path = teacher
        cfg.distiller.teacher = dict(config=model, checkpoint=path)
        cfg.distiller.update(dummy_input_shape=(3, SIZE, SIZE), **distiller_args)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].batch_size = 2
        for step in cfg[loader].dataset.pipeline:
            if step.type == 'Resize':
                step.scale = (SIZE, SIZE)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=100)
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.log_processor = dict(by_epoch=False)
    return experiment.finalize(cfg, config, work_dir)  # as tools/train.py does


def det_batch(model, n: int = 2, seed: int = 0, train: bool = True):
    """A preprocessed batch of random ``SIZE`` images with one box each."""
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(seed)
    images = [(torch.rand(3, SIZE, SIZE, generator=gen) * 255).byte() for _ in range(n)]
    samples = []
    for i in range(n):
        sample = DetDataSample(metainfo=dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE),
                                             scale_factor=(1.0, 1.0), img_id=i))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[8.0, 10.0, 40.0, 50.0]]),
                                           labels=torch.tensor([i % 10]))
        samples.append(sample)
    return model.data_preprocessor(dict(inputs=images, data_samples=samples), train)


def stock_tool(package: str, name: str) -> str:
    """A launcher shipped inside an installed OpenMMLab package (what ``mim
    train`` / ``mim test`` run)."""
    module = __import__(package)
    path = osp.join(osp.dirname(module.__file__), '.mim', 'tools', name)
    assert osp.isfile(path), path
    return path


# -- unsafe files -------------------------------------------------------------------


class Payload:
    """Pickled, it would run ``touch marker``: the payload of the unsafe
    checkpoints the tests plant (set ``Payload.marker`` first)."""
    marker = None

    def __reduce__(self):
        import os
        return (os.system, (f'touch {Payload.marker}', ))


# -- multi-process runs ---------------------------------------------------------------


def rank_state_config(teacher_checkpoint: str, work_dir: str, config: str) -> str:
    """A 2-iteration Fashion-MNIST FM-KT config whose every rank writes its
    weights into ``work_dir`` (:class:`SaveRankStateHook`), dumped to ``config``."""
    cfg = tiny_cfg('fmkt', work_dir, teacher_checkpoint, max_iters=2)
    cfg.custom_imports = dict(imports=['fmkt_mm', 'tiny_runs'], allow_failed_imports=False)
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='SaveRankStateHook', out_dir=work_dir)]
    cfg.dump(config)
    return config


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a rendezvous)."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _register_rank_state_hook():
    import torch
    from mmengine.dist import get_rank, get_world_size
    from mmengine.hooks import Hook
    from mmengine.model import is_model_wrapper
    from mmengine.registry import HOOKS

    @HOOKS.register_module(force=True)
    class SaveRankStateHook(Hook):
        """Every rank writes ``rank{r}.pth`` into ``out_dir`` after training:
        its trainable parameters, the loss names of every iteration, the
        model wrapper and its ``find_unused_parameters``."""

        priority = 'LOWEST'

        def __init__(self, out_dir: str):
            self.out_dir = out_dir
            self.loss_names = []

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.loss_names.append(sorted(outputs or {}))

        def after_train(self, runner):
            model = runner.model
            module = model.module if is_model_wrapper(model) else model
            torch.save(dict(rank=get_rank(), world_size=get_world_size(),
                            wrapper=type(model).__name__,
                            find_unused_parameters=getattr(model, 'find_unused_parameters', None),
                            loss_names=self.loss_names,
                            params={n: p.detach().cpu().clone() for n, p in module.named_parameters()
                                    if p.requires_grad}),
                       osp.join(self.out_dir, f'rank{get_rank()}.pth'))

    return SaveRankStateHook


SaveRankStateHook = _register_rank_state_hook()
