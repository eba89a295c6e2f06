"""The classic baselines: logit KD (KD / DKD / DIST) for classifiers and
feature PKD for detectors, through the same machinery as FM-KT."""
import copy
import os.path as osp
import uuid

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import fmkt_mm  # noqa: F401
from fmkt_mm.apis import apply_distiller, prepare_work_dir
from fmkt_mm.distill import FeatureDistiller, LogitDistiller
from fmkt_mm.distill.teacher import build_model
from fmkt_mm.losses import KDLoss

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CLS = osp.join(ROOT, 'configs', 'fashion_mnist')
DET = osp.join(ROOT, 'configs', 'fashion_det')


#: tiny models: one torch thread (conftest.one_thread)
ONE_THREAD = True


def model_cfg(directory, name):
    cfg = Config.fromfile(osp.join(directory, name))
    model = copy.deepcopy(cfg.model)
    model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    return model, cfg.default_scope


@pytest.fixture(scope='module')
def cls_teacher(tmp_path_factory):
    model, scope = model_cfg(CLS, 'teacher_resnet18_w16.py')
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(scope):
        teacher = build_model(model, scope)
    path = str(tmp_path_factory.mktemp('teacher') / 'teacher.pth')
    torch.save(teacher.state_dict(), path)
    return model, path


@pytest.mark.parametrize('loss', [dict(type='fmkt_mm.KDLoss', tau=4.0),
                                  dict(type='fmkt_mm.DKDLoss'), dict(type='fmkt_mm.DISTLoss')])
def test_logit_distiller_adds_the_metric_loss_to_the_task_loss(cls_teacher, loss):
    student, _ = model_cfg(CLS, 'student_resnet18_w4.py')
    teacher, path = cls_teacher
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        torch.manual_seed(0)
        model = LogitDistiller(student, dict(config=teacher, checkpoint=path), loss=loss)
        from mmpretrain.structures import DataSample
        samples = [DataSample().set_gt_label(i % 10) for i in range(4)]
        inputs = torch.randn(4, 1, 28, 28)
        losses = model.loss(inputs, samples)
    assert set(losses) == {'loss', 'loss_kd'}  # mmpretrain's task loss keeps its name
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.student.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())
    if loss['type'] == 'fmkt_mm.KDLoss':
        with torch.no_grad():
            expected = KDLoss(tau=4.0)(model.student(inputs, mode='tensor'),
                                       model.teacher(inputs, mode='tensor'))
        torch.testing.assert_close(losses['loss_kd'].detach(), expected)


def test_kd_config_trains_through_the_runner(cls_teacher, tmp_path):
    cfg = Config.fromfile(osp.join(CLS, 'dkd_resnet18_w16_to_resnet18_w4.py'))
    cfg.train_dataloader.batch_size = 4
    cfg.train_dataloader.dataset.num_samples = 8
    for loader in ('val_dataloader', 'test_dataloader'):
        cfg[loader].batch_size = 8
        cfg[loader].dataset.num_samples = 16
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=100)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.distiller.teacher.checkpoint = cls_teacher[1]
    cfg.experiment_name = f'dkd-{uuid.uuid4().hex[:8]}'
    apply_distiller(cfg)
    prepare_work_dir(cfg, 'dkd', str(tmp_path))
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert 'train/loss_kd' in runner.message_hub.log_scalars
    assert runner.model.kd_loss.warmup_iters == 100 and runner.model.kd_loss.iter == 1
    assert 'accuracy/top1' in runner.test()


@pytest.fixture(scope='module')
def det_teacher(tmp_path_factory):
    model, scope = model_cfg(DET, 'retinanet_r18_teacher.py')
    model.backbone.update(base_channels=16, stem_channels=16)
    model.neck.update(in_channels=[32, 64, 128], out_channels=32)
    model.bbox_head.update(in_channels=32, feat_channels=32)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(scope):
        teacher = build_model(model, scope)
    path = str(tmp_path_factory.mktemp('det_teacher') / 'teacher.pth')
    torch.save(teacher.state_dict(), path)
    return model, path


def det_student(fpn):
    model, _ = model_cfg(DET, 'retinanet_r18w16_student.py')
    model.backbone.update(base_channels=8, stem_channels=8)
    model.neck.update(in_channels=[16, 32, 64], out_channels=fpn)
    model.bbox_head.update(in_channels=fpn, feat_channels=fpn)
    return model


def det_batch(model):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    images = [(torch.rand(3, 64, 64) * 255).byte() for _ in range(2)]
    samples = []
    for i in range(2):
        sample = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[8.0, 10.0, 40.0, 50.0]]),
                                           labels=torch.tensor([i]))
        samples.append(sample)
    return model.data_preprocessor(dict(inputs=images, data_samples=samples), True)


def test_feature_distiller_pkd_on_every_level(det_teacher):
    teacher, path = det_teacher
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        model = FeatureDistiller(det_student(32), dict(config=teacher, checkpoint=path),
                                 level_weights=10.0, dummy_input_shape=(3, 64, 64))
        data = det_batch(model)
        losses = model.loss(data['inputs'], data['data_samples'])
    assert {f'loss_feat_l{level}' for level in range(4)} <= set(losses)
    assert {'loss_cls', 'loss_bbox'} <= set(losses)
    total, _ = model.parse_losses(losses)
    total.backward()
    assert all(p.grad is not None for p in model.student.parameters() if p.requires_grad)
    assert model.deploy_mode == 'student'


def test_feature_distiller_adapts_other_widths_by_itself(det_teacher):
    """The default adapter='auto' builds the FeatureAdapter a user would
    configure; adapter=None refuses unequal shapes naming both."""
    teacher, path = det_teacher
    with DefaultScope.overwrite_default_scope('mmdet'):
        with pytest.raises(ValueError, match=r'\(1, 16, 8, 8\).*\(1, 32, 8, 8\).*adapter=None.*FeatureAdapter'):
            FeatureDistiller(det_student(16), dict(config=teacher, checkpoint=path), adapter=None,
                             dummy_input_shape=(3, 64, 64))
        torch.manual_seed(0)
        auto = FeatureDistiller(det_student(16), dict(config=teacher, checkpoint=path),
                                dummy_input_shape=(3, 64, 64))
        torch.manual_seed(0)
        model = FeatureDistiller(det_student(16), dict(config=teacher, checkpoint=path),
                                 adapter=dict(type='FeatureAdapter'), dummy_input_shape=(3, 64, 64))
        assert auto.state_dict().keys() == model.state_dict().keys()
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in auto.state_dict().items())
        data = det_batch(model)
        losses = model.loss(data['inputs'], data['data_samples'])
    assert losses['loss_feat_l0'].requires_grad


def test_teacher_norm_standardises_the_teachers_levels_per_channel(det_teacher):
    """teacher_norm=True: the published RTMDet recipe's teacher-side BatchNorm
    without affine parameters or running statistics."""
    teacher, path = det_teacher
    with DefaultScope.overwrite_default_scope('mmdet'):
        plain = FeatureDistiller(det_student(32), dict(config=teacher, checkpoint=path),
                                 dummy_input_shape=(3, 64, 64))
        normed = FeatureDistiller(det_student(32), dict(config=teacher, checkpoint=path), teacher_norm=True,
                                  dummy_input_shape=(3, 64, 64))
        data = det_batch(normed)
        raw = plain.teacher_levels(data['inputs'], data['data_samples'])
        levels = normed.teacher_levels(data['inputs'], data['data_samples'])
    for x, level in zip(raw, levels):
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        torch.testing.assert_close(level, (x - mean) / torch.sqrt(var + 1e-5))
    assert plain.state_dict().keys() == normed.state_dict().keys()  # nothing learnt, nothing saved
    with pytest.raises(ValueError, match='teacher_norm must be True or False'):
        with DefaultScope.overwrite_default_scope('mmdet'):
            FeatureDistiller(det_student(32), dict(config=teacher, checkpoint=path), teacher_norm='bn')
