"""The project's configs distil under mmdet's and mmpretrain's own launchers
(their ``tools/train.py`` / ``tools/test.py``, what ``mim train`` / ``mim
test`` run), and no route trains a plain student silently."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

import fmkt_mm  # noqa: F401
from fmkt_mm.apis import check_config_form
from tiny_runs import CLS_CONFIGS, DET_CONFIGS, ROOT, free_port, rank_state_config, stock_tool, tiny_cfg

PYTHON = sys.executable
ENV = dict(os.environ, OMP_NUM_THREADS='1')


def derived_config(tmp_path, base: str, body: str) -> str:
    """A user's config: the shipped one as ``_base_`` plus ``body``."""
    path = tmp_path / 'user_config.py'
    path.write_text(f'_base_ = [{base!r}]\n{body}')
    return str(path)


def run(args, cwd):
    result = subprocess.run([PYTHON] + args, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def assert_distilled(checkpoint: str):
    state = torch.load(checkpoint, weights_only=True, map_location='cpu')['state_dict']
    assert any(k.startswith('student.') for k in state)
    assert any(k.startswith('teacher.') for k in state), 'no teacher in the checkpoint'
    assert any(k.startswith('flow') for k in state), 'no flow in the checkpoint'


@pytest.mark.slow
def test_mmpretrains_own_train_and_test_distil(teacher_checkpoint, tmp_path):
    config = derived_config(tmp_path, osp.join(CLS_CONFIGS, 'fmkt_resnet18_w16_to_resnet18_w4.py'), f'''
distiller = dict(teacher=dict(checkpoint={teacher_checkpoint!r}))
train_dataloader = dict(batch_size=4, dataset=dict(num_samples=8))
val_dataloader = dict(batch_size=8, dataset=dict(num_samples=16))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
''')
    work_dir = str(tmp_path / 'work')
    # mmpretrain's train.py asks for persistent workers; the configs have none
    run([stock_tool('mmpretrain', 'train.py'), config, '--work-dir', work_dir], tmp_path)
    assert_distilled(osp.join(work_dir, 'epoch_1.pth'))
    log = run([stock_tool('mmpretrain', 'test.py'), config, osp.join(work_dir, 'epoch_1.pth'),
               '--work-dir', str(tmp_path / 'test')], tmp_path)
    assert 'accuracy/top1' in log and 'flow/top1_steps8' in log  # the distiller was scored


@pytest.mark.slow
def test_mmdets_own_train_and_test_distil(coco_set, tmp_path):
    from mmdet.utils import register_all_modules
    from mmengine.registry import MODELS, DefaultScope
    register_all_modules(init_default_scope=False)
    teacher_cfg = Config.fromfile(osp.join(DET_CONFIGS, 'retinanet_r18_teacher.py'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        teacher = MODELS.build(teacher_cfg.model)
    teacher_path = str(tmp_path / 'teacher.pth')
    torch.save({'state_dict': teacher.state_dict()}, teacher_path)
    root = coco_set.rstrip('/') + '/'
    config = derived_config(tmp_path, osp.join(DET_CONFIGS, 'fmkt_retinanet_r18_to_r18w16_deploy-student.py'),
                            f'''
data_root = {root!r}
distiller = dict(teacher=dict(checkpoint={teacher_path!r}))
train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
model = dict(test_cfg=dict(score_thr=0.0, max_per_img=20))  # an untrained detector still scores boxes
''')
    work_dir = str(tmp_path / 'work')
    run([stock_tool('mmdet', 'train.py'), config, '--work-dir', work_dir], tmp_path)
    assert_distilled(osp.join(work_dir, 'epoch_1.pth'))
    os.remove(teacher_path)  # testing needs no teacher file: the checkpoint holds it
    log = run([stock_tool('mmdet', 'test.py'), config, osp.join(work_dir, 'epoch_1.pth'),
               '--work-dir', str(tmp_path / 'test')], tmp_path)
    assert 'coco/bbox_mAP' in log


@pytest.mark.slow
def test_every_shipped_distillation_config_names_the_runner():
    """What keeps a stock launcher from training the plain student: every
    config with a distiller block builds fmkt_mm's runner."""
    checked = 0
    for folder, _, files in os.walk(osp.join(ROOT, 'configs')):
        for name in files:
            if not name.endswith('.py') or name == '_base_.py':
                continue
            cfg = Config.fromfile(osp.join(folder, name))
            if 'distiller' not in cfg:
                continue
            assert cfg.get('runner_type') == 'fmkt_mm.DistillRunner', name
            assert 'fmkt_mm' in cfg.get('custom_imports', {}).get('imports', []), name
            checked += 1
    assert checked >= 40


def test_a_distiller_block_without_the_runner_fails_naming_the_fix():
    cfg = Config(dict(model=dict(type='ImageClassifier'), distiller=dict(type='fmkt_mm.X')))
    with pytest.raises(ValueError, match="runner_type = 'fmkt_mm.DistillRunner'"):
        check_config_form(cfg, 'my_config.py')
    cfg = Config(dict(model=dict(type='ImageClassifier'), distiller=dict(type='fmkt_mm.X'),
                      runner_type='Runner'))
    with pytest.raises(ValueError, match='does not apply it'):
        check_config_form(cfg, 'my_config.py')
    plain = check_config_form(Config(dict(model=dict(type='ImageClassifier'))))
    assert plain.runner_type == 'fmkt_mm.DistillRunner'  # the same guarantees for plain runs


@pytest.mark.slow
def test_the_exported_student_config_builds_a_stock_runner_without_fmkt_mm(teacher_checkpoint, tmp_path):
    """tools/export_student.py on a Fashion-MNIST run writes a config that a
    stock mmpretrain Runner builds and tests in a process that never imports
    fmkt_mm (the dataset becomes mmpretrain's own FashionMNIST)."""
    from fmkt_mm.apis import build_runner
    cfg = tiny_cfg('fmkt_theta', tmp_path / 'run', teacher_checkpoint, max_iters=1)
    build_runner(cfg).train()
    config = osp.join(CLS_CONFIGS, 'fmkt_theta_resnet18_w16_to_resnet18_w4.py')
    out = run([osp.join(ROOT, 'tools', 'export_student.py'), config, str(tmp_path / 'run' / 'iter_1.pth'),
               str(tmp_path / 'student.pth'), '--data-dir', str(tmp_path / 'fashion')], ROOT)
    assert 'the config is plain' in out
    script = f'''
import sys
sys.modules['fmkt_mm'] = None  # any import of fmkt_mm fails
from mmengine.config import Config
from mmengine.runner import Runner
cfg = Config.fromfile({str(tmp_path / 'student_config.py')!r})
assert 'fmkt_mm' not in cfg.pretty_text
cfg.work_dir = {str(tmp_path / 'plain')!r}
cfg.load_from = {str(tmp_path / 'student.pth')!r}
cfg.test_dataloader.dataset.indices = 16
print(Runner.from_cfg(cfg).test())
'''
    log = run(['-c', script], tmp_path)
    assert 'accuracy/top1' in log


@pytest.mark.slow
def test_test_tool_out_and_show_dir_as_mmdets(teacher_checkpoint, tmp_path):
    """tools/test.py --out dumps the predictions, --show-dir draws them."""
    import pickle

    from fmkt_mm.apis import build_runner
    cfg = tiny_cfg('fmkt_theta', tmp_path / 'run', teacher_checkpoint, max_iters=1)
    build_runner(cfg).train()
    config = str(tmp_path / 'config.py')
    cfg.default_hooks.visualization = dict(type='VisualizationHook', enable=False)
    cfg.visualizer = dict(type='UniversalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
    cfg.dump(config)
    run([osp.join(ROOT, 'tools', 'test.py'), config, str(tmp_path / 'run' / 'iter_1.pth'),
         '--work-dir', str(tmp_path / 'test'), '--out', str(tmp_path / 'results.pkl'),
         '--show-dir', str(tmp_path / 'shown')], ROOT)
    with open(tmp_path / 'results.pkl', 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 16 and 'pred_score' in results[0]
    shown = [f for _, _, files in os.walk(tmp_path / 'shown') for f in files if f.endswith('.png')]
    assert len(shown) == 16


def test_auto_scale_lr_scales_by_the_batch(teacher_checkpoint, tmp_path):
    """tools/train.py --auto-scale-lr: lr x (batch x processes) / base_batch_size,
    as mmdet's; without auto_scale_lr in the config it says what to add."""
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    try:
        from train import enable_auto_scale_lr
    finally:
        sys.path.pop(0)
    from fmkt_mm.apis import build_runner
    cfg = tiny_cfg('fmkt', tmp_path / 'run', teacher_checkpoint, max_iters=1)
    with pytest.raises(ValueError, match='base_batch_size'):
        enable_auto_scale_lr(cfg)
    lr = cfg.optim_wrapper.optimizer.lr
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=16)  # the batch is 4
    enable_auto_scale_lr(cfg)
    runner = build_runner(cfg)
    runner.train()
    assert runner.optim_wrapper.optimizer.param_groups[0]['lr'] == pytest.approx(lr * 4 / 16)


@pytest.mark.slow
def test_mmpretrains_own_dist_train_distils_in_two_processes(teacher_checkpoint, tmp_path):
    """mmpretrain's dist_train.sh (torch.distributed.launch, --launcher
    pytorch): on a CPU the runner starts gloo itself; both ranks end with the
    same distilled weights."""
    work_dir = str(tmp_path / 'run')
    config = rank_state_config(teacher_checkpoint, work_dir, str(tmp_path / 'config.py'))
    env = dict(ENV, PATH=osp.dirname(PYTHON) + os.pathsep + os.environ['PATH'],
               PYTHONPATH=os.pathsep.join([osp.dirname(osp.dirname(osp.abspath(__file__))), ROOT]),
               PORT=str(free_port()))
    result = subprocess.run(['bash', stock_tool('mmpretrain', 'dist_train.sh'), config, '2', '--work-dir',
                             work_dir], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    states = [torch.load(osp.join(work_dir, f'rank{r}.pth'), weights_only=True) for r in (0, 1)]
    assert [s['world_size'] for s in states] == [2, 2]
    assert any(n.startswith('flows.') for n in states[0]['params'])
    for name, value in states[0]['params'].items():
        assert torch.equal(value, states[1]['params'][name]), name
    assert_distilled(osp.join(work_dir, 'iter_2.pth'))

