"""Semantic segmentation: the CWD and pixel-KD losses against their written-out
formulas, the composed set read by mmseg's stock dataset, and FM-KT on mmseg
segmentors through the runner, the tools and a plain-mmseg export."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

import fmkt_mm  # noqa: F401
from fmkt_mm.losses import CWDLoss, PixelKDLoss
from tiny_runs import ROOT

pytest.importorskip('mmseg')
SEG_CONFIGS = osp.join(ROOT, 'configs', 'fashion_seg')
PYTHON = sys.executable


# -- losses ----------------------------------------------------------------------------------


def cwd_written_out(s, t, tau):
    """Shu et al.'s channel-wise distillation, one channel of one sample at a time."""
    b, c = s.shape[:2]
    total = 0.0
    for i in range(b):
        for k in range(c):
            p_t = torch.softmax(t[i, k].flatten() / tau, 0)
            log_p_s = torch.log_softmax(s[i, k].flatten() / tau, 0)
            total = total + (p_t * (torch.log(p_t) - log_p_s)).sum()
    return tau**2 * total / (b * c)


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_cwd_is_the_written_out_formula_in_values_and_gradients(tau):
    torch.manual_seed(0)
    s = torch.randn(2, 3, 4, 5, requires_grad=True)
    t = torch.randn(2, 3, 4, 5)
    loss = CWDLoss(tau=tau, loss_weight=2.0)(s, t)
    (grad, ) = torch.autograd.grad(loss, s)
    s2 = s.detach().clone().requires_grad_(True)
    expected = 2.0 * cwd_written_out(s2, t, tau)
    (expected_grad, ) = torch.autograd.grad(expected, s2)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize('loss', [CWDLoss(tau=2.0), PixelKDLoss(tau=2.0)])
def test_stacked_steps_equal_one_call_per_step(loss):
    torch.manual_seed(1)
    steps = torch.randn(3, 2, 4, 5, 6, requires_grad=True)
    for teacher in (torch.randn(2, 4, 5, 6), torch.randn(3, 2, 4, 5, 6)):
        stacked = loss.forward_steps(steps, teacher)
        one_by_one = torch.stack([loss(steps[k], teacher[k] if teacher.dim() == 5 else teacher)
                                  for k in range(3)])
        torch.testing.assert_close(stacked, one_by_one)
        g1, = torch.autograd.grad(stacked.sum(), steps)
        g2, = torch.autograd.grad(one_by_one.sum(), steps)
        torch.testing.assert_close(g1, g2)


def test_pixel_kd_is_kd_of_every_pixels_class_distribution():
    torch.manual_seed(2)
    s, t = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4)
    tau = 2.0
    expected = 0.0
    for i in range(2):
        for y in range(3):
            for x in range(4):
                p_t = torch.softmax(t[i, :, y, x] / tau, 0)
                expected += (p_t * (torch.log(p_t) - torch.log_softmax(s[i, :, y, x] / tau, 0))).sum()
    expected = tau**2 * expected / (2 * 3 * 4)
    torch.testing.assert_close(PixelKDLoss(tau=tau)(s, t), expected)


def test_cwd_names_both_shapes_on_a_mismatch():
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\) vs teacher \(2, 5, 4, 4\)'):
        CWDLoss()(torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 4, 4))


# -- the composed set ------------------------------------------------------------------------


@pytest.fixture(scope='module')
def seg_set(tmp_path_factory):
    from fmkt_mm.datasets import make_segmentation_set
    root = str(tmp_path_factory.mktemp('fashion_seg') / 'set')
    make_segmentation_set(root, num_train=8, num_val=4, image_size=64)
    return root


def test_the_set_is_read_by_mmsegs_stock_dataset(seg_set):
    import cv2
    from mmengine.config import Config
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    from fmkt_mm.datasets import FASHION_SEG_METAINFO, make_segmentation_set
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(osp.join(SEG_CONFIGS, '_base_.py'))
    from mmengine.registry import DefaultScope
    dataset_cfg = dict(cfg.train_dataloader.dataset, data_root=seg_set)
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = DATASETS.build(dataset_cfg)
    assert len(dataset) == 8 and dataset.metainfo['classes'] == FASHION_SEG_METAINFO['classes']
    item = dataset[0]
    labels = item['data_samples'].gt_sem_seg.data
    assert labels.shape == (1, 64, 64) and int(labels.max()) <= 10 and int(labels.min()) == 0
    image = cv2.imread(osp.join(seg_set, 'img_dir', 'train', '000001.png'))
    label_map = cv2.imread(osp.join(seg_set, 'ann_dir', 'train', '000001.png'), cv2.IMREAD_UNCHANGED)
    from fmkt_mm.datasets.detection_set import BACKGROUND_MAX
    assert (image[label_map == 0].max() <= BACKGROUND_MAX)  # garments' pixels are all labelled
    assert (label_map > 0).any()
    assert make_segmentation_set(seg_set, num_train=8, num_val=4, image_size=64) is False  # complete


# -- through the runner and the tools --------------------------------------------------------


def seg_teacher(tmp_path):
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(osp.join(SEG_CONFIGS, 'pspnet_r18w32_teacher.py'))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    path = str(tmp_path / 'teacher.pth')
    torch.save({'state_dict': model.state_dict()}, path)
    return path


def user_config(tmp_path, config, seg_set, teacher, body=''):
    path = tmp_path / f'user_{config}'
    path.write_text(f'''_base_ = [{osp.join(SEG_CONFIGS, config)!r}]
data_root = {seg_set.rstrip('/') + '/'!r}
train_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
distiller = dict(teacher=dict(checkpoint={teacher!r}))
{body}''')
    return str(path)


def run(args, cwd=ROOT):
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([osp.dirname(osp.dirname(osp.abspath(__file__))), ROOT]))
    result = subprocess.run([PYTHON] + args, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_fmkt_deploy_student_exports_a_plain_mmseg_segmentor(seg_set, tmp_path):
    config = user_config(tmp_path, 'fmkt_pspnet_r18w32_to_r18w8_deploy-student_cwd-raw.py', seg_set,
                         seg_teacher(tmp_path))
    work_dir = str(tmp_path / 'work')
    log = run([osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir])
    assert 'loss_flow' in log and 'loss_raw' in log and 'loss_theta' in log
    state = torch.load(osp.join(work_dir, 'epoch_1.pth'), weights_only=True)['state_dict']
    assert any(k.startswith('flows.') for k in state)  # the flows are trained and saved beside the student
    assert any(k.startswith('teacher.decode_head') for k in state)  # the whole teacher, as loaded
    out = run([osp.join(ROOT, 'tools', 'export_student.py'), config, osp.join(work_dir, 'epoch_1.pth'),
               str(tmp_path / 'student.pth')])
    assert 'the config is plain' in out
    image = osp.join(seg_set, 'img_dir', 'val', '000001.png')
    script = f'''
import sys
sys.modules['fmkt_mm'] = None  # any import of fmkt_mm fails
from mmseg.apis import inference_model, init_model
model = init_model({str(tmp_path / 'student_config.py')!r}, {str(tmp_path / 'student.pth')!r}, device='cpu')
result = inference_model(model, {image!r})
print('classes', len(model.dataset_meta['classes']), 'pred', tuple(result.pred_sem_seg.data.shape))
'''
    log = run(['-c', script], str(tmp_path))
    assert 'classes 11 pred (1, 64, 64)' in log


@pytest.mark.slow
@pytest.mark.parametrize('config', ['cwd_pspnet_r18w32_to_r18w8.py', 'kd_pspnet_r18w32_to_r18w8.py'])
def test_baselines_train_through_the_runner(config, seg_set, tmp_path):
    from fmkt_mm import experiment
    from fmkt_mm.apis import build_runner
    cfg = experiment.load(user_config(tmp_path, config, seg_set, seg_teacher(tmp_path)))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [dict(type='fmkt_mm.TeacherEvalHook', max_batches=1)]
    runner = build_runner(cfg)
    runner.train()
    losses = runner.message_hub.log_scalars
    assert 'train/loss_feat_l0' in losses and np.isfinite(losses['train/loss_feat_l0'].current())
    assert isinstance(runner.message_hub.get_info('teacher/mIoU'), float)  # the teacher, scored first


# -- Cityscapes configs ----------------------------------------------------------------------


@pytest.fixture(scope='module')
def cityscapes_like(tmp_path_factory):
    """Random images and label maps in Cityscapes' layout (leftImg8bit / gtFine
    labelTrainIds, 19 classes and 255), 128x256."""
    import cv2
    root = tmp_path_factory.mktemp('cityscapes')
    rng = np.random.default_rng(0)
    for split, count in (('train', 4), ('val', 2)):
        for i in range(count):
            name = f'aachen_{i:06d}_000019'
            for sub, suffix, array in (
                    ('leftImg8bit', 'leftImg8bit', rng.integers(0, 256, (128, 256, 3), dtype=np.uint8)),
                    ('gtFine', 'gtFine_labelTrainIds', rng.choice([*range(19), 255], (128, 256)).astype(np.uint8))):
                folder = root / sub / split / 'aachen'
                folder.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / f'{name}_{suffix}.png'), array)
    return str(root)


@pytest.mark.slow
@pytest.mark.parametrize('config', ['fmkt_pspnet_r101-d8_to_r18-d8_4xb2-80k_cityscapes-512x1024.py',
                                    'fmkt_deeplabv3_r101-d8_to_r18-d8_4xb2-80k_cityscapes-512x1024.py'])
def test_cityscapes_configs_train_two_iterations(config, cityscapes_like, tmp_path):
    """mmseg's own Cityscapes configs with a distiller block: the model-zoo
    teacher's config at random weights (no download here), the student's
    SyncBN as BN (one CPU process), 128x256 crops, 2 iterations."""
    from fmkt_mm import experiment
    from fmkt_mm.apis import build_runner
    cfg = experiment.load(osp.join(ROOT, 'configs', 'mmseg', config))
    assert cfg.distiller.teacher.checkpoint.startswith('https://download.openmmlab.com/mmsegmentation/')
    cfg.distiller.teacher.update(checkpoint=None, allow_random_init=True)
    cfg.distiller.dummy_input_shape = (3, 128, 256)
    cfg.model.pretrained = None  # no ImageNet download
    bn = dict(type='BN', requires_grad=True)
    for part in ('backbone', 'decode_head', 'auxiliary_head'):
        cfg.model[part].norm_cfg = bn
    cfg.data_preprocessor.size = cfg.model.data_preprocessor.size = (128, 256)
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=2, num_workers=0, persistent_workers=False)
        cfg[loader].dataset.update(data_root=cityscapes_like, pipeline=pipeline)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=100)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=2, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.work_dir = str(tmp_path / 'work')
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 2
    scalars = runner.message_hub.log_scalars
    assert np.isfinite(scalars['train/loss_flow_l3'].current())
    assert 'train/decode.loss_ce' in scalars and 'train/aux.loss_ce' in scalars


@pytest.mark.slow
def test_fmkt_segmentation_under_bf16_autocast_and_two_processes(seg_set, tmp_path):
    """The segmentation distiller under --amp (bf16 autocast on a CPU) and
    under DDP with 2 gloo processes (tools/dist_train.sh): equal weights on
    both ranks. (Resuming is the runner's, tested with the other tasks.)"""
    from tiny_runs import free_port
    teacher = seg_teacher(tmp_path)
    (tmp_path / 'ddp').mkdir()  # where SaveRankStateHook writes each rank's weights
    config = user_config(tmp_path, 'fmkt_pspnet_r18w32_to_r18w8_deploy-student.py', seg_set, teacher,
                         "custom_imports = dict(imports=['fmkt_mm', 'tiny_runs'], allow_failed_imports=False)\n"
                         f"custom_hooks = [dict(type='SaveRankStateHook', out_dir={str(tmp_path / 'ddp')!r})]\n")
    run([osp.join(ROOT, 'tools', 'train.py'), config, '--amp', '--work-dir', str(tmp_path / 'amp')])
    assert 'fmkt_mm.CPUAmpOptimWrapper' in (tmp_path / 'amp' / osp.basename(config)).read_text()
    import json
    scalars = [json.loads(line) for line in open(next((tmp_path / 'amp').glob('*/vis_data/scalars.json')))]
    flow_losses = [r['loss_flow_l0'] for r in scalars if 'loss_flow_l0' in r]  # the logits' flow
    assert flow_losses and all(np.isfinite(flow_losses))
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=PYTHON, PORT=str(free_port()),
               PYTHONPATH=os.pathsep.join([osp.dirname(osp.dirname(osp.abspath(__file__))), ROOT]))
    result = subprocess.run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), config, '2', '--work-dir',
                             str(tmp_path / 'ddp')], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    states = [torch.load(tmp_path / 'ddp' / f'rank{r}.pth', weights_only=True) for r in (0, 1)]
    assert any(n.startswith('flows.') for n in states[0]['params'])
    for name, value in states[0]['params'].items():
        assert torch.equal(value, states[1]['params'][name]), name
