"""Classification distillation through the real MMEngine Runner (tiny sizes)."""
import copy
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

import fmkt_mm  # noqa: F401
from fmkt_mm.apis import clean_up_on_failure
from fmkt_mm.checkpoint import CheckpointMismatchError, UnsafeCheckpointError
from fmkt_mm.export import export_student
from tiny_runs import CLS_CONFIGS as CONFIGS
from tiny_runs import ROOT, VARIANT_CONFIGS, plain_model, tiny_cfg

PYTHON = sys.executable


class RecordStart(Hook):
    def before_train(self, runner):
        self.start_iter = runner.iter


@pytest.mark.parametrize('variant', ['fmkt', 'fmkt_theta', 'ofmkt'])
def test_train_checkpoint_resume_and_test(variant, teacher_checkpoint, tmp_path):
    runner = Runner.from_cfg(tiny_cfg(variant, tmp_path, teacher_checkpoint))
    model = runner.model
    teacher_before = None if model.teacher is None else copy.deepcopy(model.teacher.state_dict())
    runner.train()
    assert runner.iter == 2 and osp.isfile(tmp_path / 'epoch_1.pth')
    logs = runner.message_hub.log_scalars
    assert {'train/loss_cls', 'train/loss_flow', 'train/flow_step1', 'train/flow_step8'} <= set(logs)
    if variant != 'fmkt':
        assert 'train/loss_theta' in logs and 'train/loss_flow_cls' in logs
    if teacher_before is not None:  # weights and BatchNorm statistics untouched
        assert not model.teacher.training
        for key, value in model.teacher.state_dict().items():
            assert torch.equal(value, teacher_before[key]), key
    # checkpoints hold only tensors and plain data
    torch.load(tmp_path / 'epoch_1.pth', weights_only=True)

    resume_cfg = tiny_cfg(variant, tmp_path, teacher_checkpoint, max_epochs=2)
    resume_cfg.resume = True
    resumed = Runner.from_cfg(resume_cfg)
    recorder = RecordStart()
    resumed.register_hook(recorder, 'LOWEST')
    resumed.train()
    assert recorder.start_iter == 2 and resumed.iter == 4
    metrics = resumed.test()
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0


@pytest.mark.slow
def test_test_tool_prints_top1_and_steps(teacher_checkpoint, tmp_path):
    cfg = tiny_cfg('fmkt', tmp_path / 'train', teacher_checkpoint)
    Runner.from_cfg(cfg).train()
    config = tmp_path / 'config.py'
    cfg.dump(str(config))
    out = subprocess.run([PYTHON, osp.join(ROOT, 'tools', 'test.py'), str(config),
                          str(tmp_path / 'train' / 'epoch_1.pth'), '--work-dir', str(tmp_path / 'test')],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert 'accuracy/top1' in log
    assert 'flow ensemble top-1 by number of steps: N=1:' in log


def test_log_lines_average_per_step_terms_and_plot_run_draws_them(teacher_checkpoint, tmp_path):
    """DistillLogProcessor: per-step terms are window means like the losses
    and reach vis_data/scalars.json; the console line has the summed terms.
    tools/plot_run.py draws the per-step losses and top-1 by steps."""
    cfg = tiny_cfg('fmkt', tmp_path, teacher_checkpoint, max_epochs=2)
    cfg.default_hooks.logger.interval = 2
    for hook in cfg.custom_hooks:
        if hook.type == 'fmkt_mm.FlowStepsHook':
            hook.val_steps = (1, 2, 8)
    assert cfg.log_processor.type == 'fmkt_mm.DistillLogProcessor'
    runner = Runner.from_cfg(cfg)
    runner.train()
    history = runner.message_hub.log_scalars
    logged = [json.loads(line) for line in open(glob.glob(
        str(tmp_path / '*' / 'vis_data' / 'scalars.json'))[0]) if '"flow_step1"' in line]
    assert [row['step'] for row in logged] == [2, 4]
    window = runner.log_processor.window_size
    for key in ('flow_step1', 'flow_step8', 'loss_flow'):
        values, _ = history[f'train/{key}'].data
        assert logged[-1][key] == pytest.approx(float(values[-window:].mean()))
    text = open(glob.glob(str(tmp_path / '*' / '*.log'))[0]).read()
    lines = [line for line in text.splitlines() if 'Epoch(train)' in line]
    assert lines and all('loss_flow:' in line and 'flow_step' not in line for line in lines)

    out = subprocess.run([PYTHON, osp.join(ROOT, 'tools', 'plot_run.py'), str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'flow loss of 8 steps' in out.stdout and 'top1 by steps N=1:' in out.stdout
    assert 'N=2:' in out.stdout and 'N=8:' in out.stdout
    with open(tmp_path / 'flow_run.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_test_tool_needs_no_teacher_file(teacher_checkpoint, tmp_path):
    """A FM-KT^Theta checkpoint holds its teacher: tools/test.py scores it
    after the teacher's own file is gone, loading the teacher strictly from
    the checkpoint; a checkpoint whose teacher does not fit fails naming the
    keys."""
    teacher = tmp_path / 'teacher.pth'
    shutil.copy(teacher_checkpoint, teacher)
    cfg = tiny_cfg('fmkt_theta', tmp_path / 'train', str(teacher))
    Runner.from_cfg(cfg).train()
    config = tmp_path / 'config.py'
    cfg.dump(str(config))
    teacher.unlink()
    checkpoint = tmp_path / 'train' / 'epoch_1.pth'
    out = subprocess.run([PYTHON, osp.join(ROOT, 'tools', 'test.py'), str(config), str(checkpoint),
                          '--work-dir', str(tmp_path / 'test')],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'accuracy/top1' in out.stdout + out.stderr
    assert 'the teacher\'s weights come from' in out.stdout + out.stderr

    state = torch.load(checkpoint, weights_only=True)
    state['state_dict'].pop('teacher.head.fc.bias')
    broken = tmp_path / 'broken.pth'
    torch.save(state, broken)
    out = subprocess.run([PYTHON, osp.join(ROOT, 'tools', 'test.py'), str(config), str(broken),
                          '--work-dir', str(tmp_path / 'test-broken')],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode != 0
    assert 'CheckpointMismatchError' in out.stderr and 'head.fc.bias' in out.stderr


@pytest.mark.slow
def test_export_round_trip_in_a_process_without_fmkt_mm(teacher_checkpoint, tmp_path):
    cfg = tiny_cfg('fmkt_theta', tmp_path / 'train', teacher_checkpoint)
    runner = Runner.from_cfg(cfg)
    runner.train()
    config = tmp_path / 'config.py'
    cfg.dump(str(config))
    summary = export_student(str(config), str(tmp_path / 'train' / 'epoch_1.pth'), str(tmp_path / 'student.pth'))
    assert summary['deploy_mode'] == 'student' and summary['not_exported'] is None

    torch.manual_seed(0)
    inputs = torch.randn(5, 1, 28, 28)
    model = runner.model.eval()
    with torch.no_grad():
        expected = torch.stack([s.pred_score for s in model.predict(inputs)])
    torch.save(dict(inputs=inputs, expected=expected), tmp_path / 'io.pth')
    student_cfg = osp.join(CONFIGS, 'student_resnet18_w4.py')
    script = f'''
import sys, torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
import mmpretrain.models  # noqa
from mmpretrain.registry import MODELS
cfg = Config.fromfile({student_cfg!r}, import_custom_modules=False)
cfg.model.data_preprocessor = cfg.data_preprocessor
with DefaultScope.overwrite_default_scope('mmpretrain'):
    model = MODELS.build(cfg.model)
ckpt = torch.load({str(tmp_path / 'student.pth')!r}, weights_only=True)
model.load_state_dict(ckpt['state_dict'], strict=True)
model.eval()
io = torch.load({str(tmp_path / 'io.pth')!r}, weights_only=True)
with torch.no_grad():
    scores = torch.stack([s.pred_score for s in model.predict(io['inputs'])])
assert 'fmkt_mm' not in sys.modules
torch.testing.assert_close(scores, io['expected'], rtol=0, atol=1e-6)
print('ROUND-TRIP-OK')
'''
    out = subprocess.run([PYTHON, '-c', script], capture_output=True, text=True, timeout=300)
    assert 'ROUND-TRIP-OK' in out.stdout, out.stderr[-3000:]


def test_fmkt_export_says_what_is_not_exportable(teacher_checkpoint, tmp_path):
    cfg = tiny_cfg('fmkt', tmp_path / 'train', teacher_checkpoint)
    Runner.from_cfg(cfg).train()
    config = tmp_path / 'config.py'
    cfg.dump(str(config))
    with pytest.warns(UserWarning, match='meta-encoder'):
        summary = export_student(str(config), str(tmp_path / 'train' / 'epoch_1.pth'),
                                 str(tmp_path / 'student.pth'))
    assert summary['deploy_mode'] == 'flow' and 'flow' in summary['not_exported']


def build_in_work_dir(cfg, work_dir):
    with clean_up_on_failure(str(work_dir)):
        return Runner.from_cfg(cfg)


def test_wrong_teacher_head_fails_with_the_keys_and_leaves_no_work_dir(tmp_path):
    wrong = tmp_path / 'wrong_head.pth'
    torch.save(plain_model('teacher_resnet18_w16.py', num_classes=5).state_dict(), wrong)
    work_dir = tmp_path / 'run'
    cfg = tiny_cfg('fmkt', work_dir, str(wrong))
    with pytest.raises(CheckpointMismatchError,
                       match=r'head\.fc\.weight \(checkpoint \(5, 128\) vs model \(10, 128\)\)'):
        build_in_work_dir(cfg, work_dir)
    assert not work_dir.exists()


@pytest.mark.slow
def test_missing_teacher_file_fails_in_train_tool_without_work_dir(tmp_path):
    work_dir = tmp_path / 'run'
    out = subprocess.run(
        [PYTHON, osp.join(ROOT, 'tools', 'train.py'), osp.join(CONFIGS, VARIANT_CONFIGS['fmkt']),
         '--work-dir', str(work_dir), '--cfg-options', 'distiller.teacher.checkpoint=/nonexistent/t.pth'],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode != 0
    assert "teacher checkpoint not found: '/nonexistent/t.pth'" in out.stderr
    assert not work_dir.exists()


@pytest.mark.slow
def test_deterministic_runs_repeat_bit_for_bit_across_processes(teacher_checkpoint, tmp_path):
    """``tools/train.py --seed N --deterministic``: two processes with the
    same seed train to identical weights (every encoder, including the conv
    and transformer ones), and another seed to other weights."""
    for encoder in ('conv', 'transformer'):
        (tmp_path / f'{encoder}.py').write_text(
            f"_base_ = [{osp.join(CONFIGS, VARIANT_CONFIGS['fmkt'])!r}]\n"
            f"distiller = dict(teacher=dict(checkpoint={teacher_checkpoint!r}),\n"
            f"                 flow=dict(encoder=dict(_delete_=True, type={encoder!r})))\n"
            "train_dataloader = dict(batch_size=4, dataset=dict(num_samples=8))\n"
            "train_cfg = dict(max_epochs=1, val_interval=100)\n"
            "param_scheduler = []\n")
    env = dict(os.environ, OMP_NUM_THREADS='1')  # one environment: the same thread count

    def train(name, seed, encoder):
        return subprocess.Popen(
            [PYTHON, osp.join(ROOT, 'tools', 'train.py'), str(tmp_path / f'{encoder}.py'),
             '--work-dir', str(tmp_path / name), '--seed', str(seed), '--deterministic'],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def weights(name):
        state = torch.load(tmp_path / name / 'epoch_1.pth', map_location='cpu',
                           weights_only=False)['state_dict']  # written by this test
        return {k: v for k, v in state.items() if not k.startswith('teacher.')}

    runs = [('conv_a', 3, 'conv'), ('conv_b', 3, 'conv'), ('transformer_a', 3, 'transformer'),
            ('transformer_b', 3, 'transformer'), ('conv_seed4', 4, 'conv')]
    for pair in ((runs[0], runs[1], runs[4]), runs[2:4]):  # two or three at a time on the two cores
        for name, process in [(name, train(name, seed, encoder)) for name, seed, encoder in pair]:
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, f'{name}: {err[-3000:]}'
    for a, b in (('conv_a', 'conv_b'), ('transformer_a', 'transformer_b')):
        first, second = weights(a), weights(b)
        assert first.keys() == second.keys()
        unequal = [k for k in first if not torch.equal(first[k], second[k])]
        assert unequal == [], f'{a} and {b} differ in {unequal[:5]}'
    other = weights('conv_seed4')
    assert any(not torch.equal(other[k], v) for k, v in weights('conv_a').items() if v.is_floating_point())


def test_unknown_tap_lists_the_real_paths(teacher_checkpoint, tmp_path):
    cfg = tiny_cfg('fmkt', tmp_path / 'run', teacher_checkpoint)
    cfg.model.teacher_tap = 'head.classifier'
    with pytest.raises(ValueError, match=r"unknown module path 'head.classifier' in the teacher.*'head.fc'"):
        build_in_work_dir(cfg, tmp_path / 'run')
    assert not (tmp_path / 'run').exists()


def test_mismatched_logits_name_both_shapes(tmp_path):
    teacher5 = tmp_path / 'teacher5.pth'
    torch.save(plain_model('teacher_resnet18_w16.py', num_classes=5).state_dict(), teacher5)
    cfg = tiny_cfg('fmkt', tmp_path / 'run', str(teacher5))
    cfg.model.teacher.config = dict(plain_model_cfg(num_classes=5))
    with pytest.raises(ValueError, match=r'\(2, 10\) logits.*\(2, 5\).*num_classes'):
        build_in_work_dir(cfg, tmp_path / 'run')
    assert not (tmp_path / 'run').exists()


def plain_model_cfg(**head):
    cfg = Config.fromfile(osp.join(CONFIGS, 'teacher_resnet18_w16.py'))
    cfg.model.head.update(head)
    return dict(model=cfg.model.to_dict(), default_scope='mmpretrain',
                data_preprocessor=cfg.data_preprocessor.to_dict())


class Payload:
    def __reduce__(self):
        return (os.system, (f'touch {MARKER}', ))


MARKER = None


def test_malicious_teacher_checkpoint_is_refused_and_never_runs(tmp_path):
    global MARKER
    MARKER = str(tmp_path / 'payload-ran')
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': Payload()}, evil)
    cfg = tiny_cfg('fmkt', tmp_path / 'run', str(evil))
    with pytest.raises(UnsafeCheckpointError, match='allow_unsafe_pickle=True'):
        build_in_work_dir(cfg, tmp_path / 'run')
    assert not osp.exists(MARKER)


def test_load_from_a_plain_student_checkpoint(teacher_checkpoint, tmp_path):
    torch.manual_seed(3)
    student = plain_model('student_resnet18_w4.py')
    torch.save({'state_dict': student.state_dict()}, tmp_path / 'plain.pth')
    cfg = tiny_cfg('fmkt_theta', tmp_path / 'run', teacher_checkpoint)
    cfg.load_from = str(tmp_path / 'plain.pth')
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    for key, value in student.state_dict().items():
        assert torch.equal(runner.model.student.state_dict()[key], value), key


def test_bf16_autocast_training_on_cpu(teacher_checkpoint, tmp_path):
    from fmkt_mm.optim import enable_amp
    cfg = tiny_cfg('fmkt', tmp_path, teacher_checkpoint)
    enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'fmkt_mm.CPUAmpOptimWrapper'
    runner = Runner.from_cfg(cfg)
    runner.train()
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert torch.isfinite(torch.tensor(loss))


@pytest.mark.parametrize('variant', ['fmkt_theta', 'ofmkt'])
def test_theta_and_flow_losses_share_one_call_with_the_separate_values(variant, teacher_checkpoint,
                                                                       tmp_path):
    """FM-KT^Theta / OFM-KT compute the flow's step losses and the theta loss
    in one call of the shared metric loss: the values and gradients are those
    of two separate calls."""
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import DefaultScope
    cfg = tiny_cfg(variant, tmp_path, teacher_checkpoint)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = ROOT_MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    assert model._theta_shares_flow_loss
    gen = torch.Generator().manual_seed(0)
    from mmpretrain.structures import DataSample
    batch = dict(inputs=[torch.randint(0, 255, (1, 28, 28), generator=gen, dtype=torch.uint8)
                         for _ in range(4)],
                 data_samples=[DataSample().set_gt_label(i % 10) for i in range(4)])
    data = model.data_preprocessor(batch, True)

    def losses_and_grads(shared):
        model._theta_shares_flow_loss = shared
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        losses = model(data['inputs'], data['data_samples'], mode='loss')
        loss, _ = model.parse_losses(losses)
        loss.backward()
        return losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    shared, shared_grads = losses_and_grads(True)
    separate, separate_grads = losses_and_grads(False)
    assert set(shared) == set(separate)
    for key in shared:
        torch.testing.assert_close(shared[key], separate[key], rtol=1e-5, atol=1e-6)
    assert set(shared_grads) == set(separate_grads)
    for key in shared_grads:
        torch.testing.assert_close(shared_grads[key], separate_grads[key], rtol=1e-4, atol=1e-6)


def test_the_teacher_runs_without_autograd_and_the_student_with_it(teacher_checkpoint, tmp_path):
    """The frozen teacher's forward records no graph (no activations kept for
    a backward pass), the student's does."""
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import DefaultScope
    from mmpretrain.structures import DataSample
    cfg = tiny_cfg('fmkt', tmp_path, teacher_checkpoint)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = ROOT_MODELS.build(cfg.model)
    model.train()
    grad_enabled = {}
    def record(who):
        def hook(module, args, out):
            grad_enabled.setdefault(who, torch.is_grad_enabled())
        return hook

    for who in ('teacher', 'student'):
        getattr(model, who).backbone.register_forward_hook(record(who))
    batch = dict(inputs=[torch.zeros(1, 28, 28, dtype=torch.uint8) for _ in range(2)],
                 data_samples=[DataSample().set_gt_label(i) for i in range(2)])
    data = model.data_preprocessor(batch, True)
    model(data['inputs'], data['data_samples'], mode='loss')
    assert grad_enabled == dict(teacher=False, student=True)


def test_checkpoints_of_one_teachers_flow_named_flow_load_and_resume(tmp_path):
    """A classification distiller saved while one teacher's flow was
    ``flow`` (today ``flows.0``, as with several teachers), written by
    fmkt_mm 0.1.0 up to commit 8347306 (tests/data): it fits, loads every
    tensor, and predicts the logits it predicted when saved. The rename
    keeps each parameter's place in the order, so it also resumes."""
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import DefaultScope

    from fmkt_mm import experiment
    from fmkt_mm.state_fit import check_fit, refuse_older_layout
    saved = torch.load(osp.join(ROOT, 'tests', 'data', 'classification_distiller_single_flow.pth'),
                       weights_only=True)
    teacher = Config.fromfile(osp.join(CONFIGS, 'teacher_resnet18_w16.py'))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        torch.save(ROOT_MODELS.build(teacher.model).state_dict(), tmp_path / 'teacher.pth')
        cfg = experiment.load(osp.join(CONFIGS, VARIANT_CONFIGS['fmkt']))
        experiment.set_teacher(cfg, str(tmp_path / 'teacher.pth'))
        cfg = experiment.finalize(cfg, 'legacy', str(tmp_path))
        model = ROOT_MODELS.build(cfg.model)
    state = saved['state_dict']
    assert any(k.startswith('flow.') for k in state) and check_fit(model, state, what='legacy') == []
    incompatible = model.load_state_dict(dict(state), strict=False)
    assert incompatible.unexpected_keys == [] and all(k.startswith('teacher.') for k in incompatible.missing_keys)
    for key, value in model.state_dict().items():
        if not key.startswith('teacher.'):
            assert torch.equal(value, state[key.replace('flows.0.', 'flow.', 1)]), key
    model.eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(3)), mode='tensor')
    torch.testing.assert_close(logits, saved['logits'], rtol=1e-5, atol=1e-6)
    refuse_older_layout(model, state, 'epoch_1.pth')  # a plain rename: resumes
