"""Running distillation like a real job: several processes, mixed precision,
the operations hooks, resuming after a kill, atomic checkpoints and the stop
on a non-finite loss."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.hooks import CheckpointHook, Hook
from mmengine.runner import Runner

import fmkt_mm  # noqa: F401
from fmkt_mm.checkpoint import AtomicLocalBackend, atomic_write
from fmkt_mm.distill.base import NonFiniteLossError
from fmkt_mm.hooks import (
    ExportStudentHook,
    FiniteGradientHook,
    LossWeightScheduleHook,
    NonFiniteGradientError,
    StopDistillationHook,
    TeacherEvalHook,
    schedule_factor,
)
from fmkt_mm.optim import enable_amp
from tiny_runs import ROOT, plain_model, retinanet, runner_config, stock_tool, tiny_cfg

PYTHON = sys.executable
TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))
ENV = dict(os.environ, PYTHON=PYTHON, OMP_NUM_THREADS='1',
           PYTHONPATH=os.pathsep.join([TESTS, ROOT, os.environ.get('PYTHONPATH', '')]))


class Recorder(Hook):
    """Loss names of every iteration, calls of the teacher, and a copy of
    the trainable parameters before each iteration."""

    priority = 'LOWEST'

    def __init__(self, model=None):
        self.loss_names, self.teacher_calls, self.before_iter = [], [], None
        if model is not None and model.teacher is not None:
            model.teacher.backbone.register_forward_hook(lambda *args: self.teacher_calls.append(1))

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.before_iter = {n: p.detach().clone() for n, p in runner.model.named_parameters()}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.loss_names.append(sorted(k for k in outputs if k.startswith('loss')))


def trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# -- several processes -------------------------------------------------------------------


def run_dist(cfg, work_dir, procs=2):
    """Dump ``cfg`` (with the rank-state hook) and train it with
    ``tools/dist_train.sh`` in ``procs`` processes."""
    cfg.custom_imports = dict(imports=['fmkt_mm', 'tiny_runs'], allow_failed_imports=False)
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='SaveRankStateHook', out_dir=work_dir)]
    path = osp.join(work_dir, 'config.py')
    os.makedirs(work_dir, exist_ok=True)
    cfg.dump(path)
    result = subprocess.run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), path, str(procs),
                             '--work-dir', work_dir],
                            capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return path


def evaluate_with_one_and_two_processes(config, checkpoint, tmp_path):
    """``(tools/test.py, tools/dist_test.sh with 2 processes)`` on one checkpoint,
    run side by side: the finished processes, each asserted to have succeeded."""
    def start(command, name):
        return subprocess.Popen(command + ['--work-dir', str(tmp_path / name)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=ENV)

    launched = [start([PYTHON, osp.join(ROOT, 'tools', 'test.py'), config, checkpoint], 'test1'),
                start(['bash', osp.join(ROOT, 'tools', 'dist_test.sh'), config, checkpoint, '2'], 'test2')]
    outputs = [p.communicate(timeout=300) for p in launched]  # then the return codes are set
    done = [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(launched, outputs)]
    for process in done:
        assert process.returncode == 0, process.stderr[-3000:]
    return tuple(done)


def rank_states(work_dir, procs=2):
    states = [torch.load(osp.join(work_dir, f'rank{r}.pth'), weights_only=True) for r in range(procs)]
    for state in states:
        assert state['world_size'] == procs
        assert state['wrapper'] == 'MMDistributedDataParallel'
        assert state['find_unused_parameters'] is False
    for name, value in states[0]['params'].items():
        for other in states[1:]:
            assert torch.equal(value, other['params'][name]), name
    return states


@pytest.mark.slow
def test_two_processes_classification_with_stop_then_test(teacher_checkpoint, tmp_path):
    """2 gloo processes through tools/dist_train.sh: FM-KT^Theta distils one
    iteration, then trains on its task loss alone (the flow and the Theta
    loss's modules then get zero gradients: still no unused-parameter error);
    the weights agree on both ranks; tools/dist_test.sh with 2 processes
    gives the single-process top-1."""
    work_dir = str(tmp_path / 'cls')
    cfg = tiny_cfg('fmkt_theta', work_dir, teacher_checkpoint, max_iters=3)
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='fmkt_mm.StopDistillationHook', stop_iter=1)]
    config = run_dist(cfg, work_dir)
    states = rank_states(work_dir)
    names = states[0]['loss_names']
    assert len(names) == 3 and 'loss_flow' in names[0] and names[2] == ['loss', 'loss_cls']

    checkpoint = osp.join(work_dir, 'iter_3.pth')
    single, multi = evaluate_with_one_and_two_processes(config, checkpoint, tmp_path)

    def top1(out):
        line = [x for x in (out.stdout + out.stderr).splitlines() if 'accuracy/top1' in x][-1]
        return float(line.split('accuracy/top1:')[1].split()[0])

    assert top1(single) == pytest.approx(top1(multi), abs=1e-6)


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_the_whole_batch(teacher_checkpoint, tmp_path):
    """Data parallelism changes nothing but the speed: 2 gloo processes of
    batch 2 end with the weights of 1 process of batch 4 over the same
    samples. (For the comparison to be exact the student's normalisation and
    the losses must not couple the samples of a batch: GroupNorm instead of
    per-rank BatchNorm statistics, KD instead of DIST's batch correlations, no
    random augmentation.)"""
    def config(work_dir, batch_size):
        cfg = tiny_cfg('fmkt', work_dir, teacher_checkpoint, max_iters=2)
        cfg.train_dataloader.batch_size = batch_size
        cfg.train_dataloader.dataset.pipeline = [dict(type='PackInputs')]
        cfg.model.student.backbone.norm_cfg = dict(type='GN', num_groups=4, requires_grad=True)
        cfg.model.flow.loss = dict(type='fmkt_mm.KDLoss', tau=4.0)
        return cfg

    work_dir = str(tmp_path / 'two')
    run_dist(config(work_dir, 2), work_dir)
    two = rank_states(work_dir)[0]['params']

    runner = Runner.from_cfg(config(str(tmp_path / 'one'), 4))
    start = trainable(runner.model)
    runner.train()
    one = trainable(runner.model)
    assert set(one) == set(two)
    moved = [n for n in one if not torch.equal(one[n], start[n])]
    assert any(n.startswith('student.') for n in moved) and any(n.startswith('flows.') for n in moved)
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_two_processes_detection_deploy_flow(coco_set, det_teacher, tmp_path):
    """2 gloo processes, a RetinaNet with the flows feeding its head; then
    tools/dist_test.sh scores two step counts in one pass (each count's copy
    of the COCO evaluator gathers over both ranks) as tools/test.py does."""
    work_dir = str(tmp_path / 'det')
    cfg = runner_config('fmkt_retinanet_r18_to_r18w16_deploy-flow.py', work_dir, coco_set,
                        retinanet(8, 32), det_teacher, max_iters=2)
    cfg.train_dataloader.batch_size = 1
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='fmkt_mm.FlowStepsHook', test_steps=(1, 2))]
    config = run_dist(cfg, work_dir)
    states = rank_states(work_dir)
    assert any(k.startswith('flows.') for k in states[0]['params'])
    assert 'loss_flow_l0' in states[0]['loss_names'][0]

    checkpoint = osp.join(work_dir, 'iter_2.pth')
    single, multi = evaluate_with_one_and_two_processes(config, checkpoint, tmp_path)

    def by_steps(out):
        line = [x for x in (out.stdout + out.stderr).splitlines()
                if 'flow ensemble by number of steps' in x][-1]
        return line.split('number of steps: ')[1]

    assert 'N=1: coco/bbox_mAP' in by_steps(single) and 'N=2: coco/bbox_mAP' in by_steps(single)
    assert by_steps(single) == by_steps(multi)


# -- mixed precision ---------------------------------------------------------------------------


@pytest.mark.parametrize('variant', ['fmkt_theta', 'ofmkt'])
def test_bf16_autocast_every_classification_variant(variant, teacher_checkpoint, tmp_path):
    cfg = enable_amp(tiny_cfg(variant, tmp_path, teacher_checkpoint))
    runner = Runner.from_cfg(cfg)
    dtypes = []
    runner.model.student.backbone.register_forward_hook(lambda m, i, o: dtypes.append(o[-1].dtype))
    runner.train()
    assert torch.bfloat16 in dtypes  # the student really ran in bf16
    for key in ('loss', 'loss_flow', 'loss_theta', 'loss_cls'):
        assert torch.isfinite(torch.tensor(runner.message_hub.get_scalar(f'train/{key}').current()))
    assert all(p.dtype == torch.float32 for p in runner.model.parameters())


@pytest.mark.parametrize('deploy', ['flow', 'student'])
def test_bf16_autocast_detection(deploy, coco_set, det_teacher, tmp_path):
    cfg = runner_config(f'fmkt_retinanet_r18_to_r18w16_deploy-{deploy}.py', str(tmp_path), coco_set,
                        retinanet(8, 32), det_teacher)
    runner = Runner.from_cfg(enable_amp(cfg))
    runner.train()
    for key in ('loss', 'loss_cls', 'loss_flow_l0'):
        assert torch.isfinite(torch.tensor(runner.message_hub.get_scalar(f'train/{key}').current()))
    assert all(p.dtype == torch.float32 for p in runner.model.parameters())


# -- resume after a kill ---------------------------------------------------------------------


class KillAt(Hook):
    """Dies like a killed process before iteration ``at + 1``."""

    def __init__(self, at):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            raise KeyboardInterrupt('killed')


@pytest.mark.slow
def test_kill_and_resume_repeats_the_uninterrupted_run(teacher_checkpoint, tmp_path):
    """FM-KT with random step counts and pair decoupling (torch draws
    each iteration) and a shuffled sampler: killed after 3 of 5 iterations
    and resumed, the run ends with the weights of the uninterrupted run,
    bit for bit."""
    def cfg_for(name):
        cfg = tiny_cfg('fmkt', tmp_path / name, teacher_checkpoint, max_iters=5)
        cfg.model.flow.num_steps_choices = (2, 4, 8)
        cfg.model.flow.beta_d = 0.5  # pair decoupling permutes with torch's generator too
        return cfg

    whole = Runner.from_cfg(cfg_for('whole'))
    whole.train()
    expected = trainable(whole.model)

    killed = Runner.from_cfg(cfg_for('killed'))
    killed.register_hook(KillAt(3))
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    assert osp.isfile(tmp_path / 'killed' / 'iter_3.pth')
    cfg = cfg_for('killed')
    cfg.resume = True
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    assert resumed.iter == 5
    got = trainable(resumed.model)
    assert all(torch.equal(expected[k], got[k]) for k in expected), \
        [k for k in expected if not torch.equal(expected[k], got[k])][:5]


@pytest.mark.slow
def test_an_epoch_loop_resumes_exactly_from_a_checkpoint_inside_or_at_the_end_of_an_epoch(
        teacher_checkpoint, tmp_path):
    """Epoch-based training (4 epochs of 2 iterations, an epoch-wise learning
    rate step) checkpointed every iteration: resumed from the last iteration
    of epoch 1, and from the middle of epoch 2 by mmpretrain's own train.py,
    it ends at iteration 8 with the uninterrupted run's weights, optimizer
    state and learning-rate schedule."""
    def cfg_for(name, resume_from=None):
        cfg = tiny_cfg('fmkt', tmp_path / name, teacher_checkpoint, max_epochs=4)
        cfg.model.flow.num_steps_choices = (2, 4, 8)  # torch draws every iteration
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=1)
        cfg.param_scheduler = [dict(type='MultiStepLR', by_epoch=True, milestones=[2], gamma=0.1)]
        if resume_from:
            cfg.load_from, cfg.resume = str(tmp_path / 'whole' / resume_from), True
        return cfg

    whole = Runner.from_cfg(cfg_for('whole'))
    whole.train()
    assert type(whole.train_loop).__name__ == 'ResumableEpochBasedTrainLoop'
    assert (whole.iter, whole.epoch) == (8, 4)
    expected = trainable(whole.model)
    expected_state = whole.optim_wrapper.state_dict()['state']
    resumed = Runner.from_cfg(cfg_for('from_iter_2', 'iter_2.pth'))
    resumed.train()
    assert (resumed.iter, resumed.epoch) == (8, 4)
    assert resumed.optim_wrapper.get_lr() == whole.optim_wrapper.get_lr()
    got = trainable(resumed.model)
    assert all(torch.equal(expected[k], got[k]) for k in expected), \
        [k for k in expected if not torch.equal(expected[k], got[k])][:5]
    state = resumed.optim_wrapper.state_dict()['state']
    assert all(torch.equal(expected_state[i]['momentum_buffer'], state[i]['momentum_buffer'])
               for i in expected_state)

    # inside epoch 2, through mmpretrain's own tools/train.py --resume (what mim train runs)
    import runpy
    config = str(tmp_path / 'config.py')
    cfg_for('unused').dump(config)
    work_dir = tmp_path / 'from_iter_3'
    tool = stock_tool('mmpretrain', 'train.py')
    argv = sys.argv
    sys.argv = [tool, config, '--work-dir', str(work_dir), '--resume', str(tmp_path / 'whole' / 'iter_3.pth')]
    try:
        runpy.run_path(tool, run_name='__main__')
    finally:
        sys.argv = argv
    final = torch.load(work_dir / 'iter_8.pth', weights_only=True)
    whole_final = torch.load(tmp_path / 'whole' / 'iter_8.pth', weights_only=True)
    assert not (work_dir / 'iter_9.pth').exists()
    assert (final['meta']['epoch'], final['meta']['iter']) == (whole_final['meta']['epoch'], 8)
    assert all(torch.equal(expected[k], final['state_dict'][k]) for k in expected), \
        [k for k in expected if not torch.equal(expected[k], final['state_dict'][k])][:5]
    assert final['param_schedulers'] == whole_final['param_schedulers']


# -- atomic checkpoints -----------------------------------------------------------------------


def test_a_failure_while_saving_leaves_the_previous_checkpoint(tmp_path):
    target = tmp_path / 'iter_1.pth'
    atomic_write(str(target), b'the complete old checkpoint')

    def dies_half_way(f):
        f.write(b'half of the new')
        raise KeyboardInterrupt('killed while saving')

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(target), dies_half_way)
    assert target.read_bytes() == b'the complete old checkpoint'
    assert os.listdir(tmp_path) == ['iter_1.pth']  # no temporary file left


def test_the_runner_saves_through_the_atomic_backend(teacher_checkpoint, tmp_path):
    runner = Runner.from_cfg(tiny_cfg('fmkt_theta', tmp_path, teacher_checkpoint, max_iters=1))
    runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, CheckpointHook))
    assert type(hook).__name__ == 'DurableCheckpointHook'
    assert isinstance(hook.file_backend, AtomicLocalBackend)
    torch.load(tmp_path / 'iter_1.pth', weights_only=True)
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]


# -- non-finite losses ------------------------------------------------------------------------


def test_a_nan_loss_stops_before_the_update_and_names_term_and_iteration(teacher_checkpoint, tmp_path):
    cfg = tiny_cfg('fmkt_theta', tmp_path, teacher_checkpoint, max_iters=3)
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(
        type='fmkt_mm.LossWeightScheduleHook',
        schedules=dict(flow_loss_weight=dict(type='step', milestones=[1], factors=[1.0, float('nan')])))]
    runner = Runner.from_cfg(cfg)
    recorder = Recorder()
    runner.register_hook(recorder)
    with pytest.raises(NonFiniteLossError, match=r'at iteration 2 .*loss_flow'):
        runner.train()
    after = dict(runner.model.named_parameters())
    assert all(torch.equal(v, after[k]) for k, v in recorder.before_iter.items())  # no update
    torch.load(tmp_path / 'iter_1.pth', weights_only=True)  # the last checkpoint is intact


@pytest.mark.parametrize('clip', [True, False])
def test_gradients_that_overflow_stop_the_run_before_the_update(teacher_checkpoint, tmp_path, clip):
    """Finite losses, infinite gradients (a flow loss weight of 1e39): the run
    stops at the first iteration, naming it, the loss terms and the
    parameters, before the update; with or without gradient clipping."""
    cfg = tiny_cfg('fmkt', tmp_path, teacher_checkpoint, max_iters=3)
    cfg.model.flow.loss.loss_weight = 1e39
    if not clip:
        cfg.optim_wrapper.pop('clip_grad', None)
    runner = Runner.from_cfg(cfg)
    recorder = Recorder()
    runner.register_hook(recorder)
    with pytest.raises(NonFiniteGradientError) as raised:
        runner.train()
    message = str(raised.value)
    assert 'non-finite gradients at iteration 1 (runner.iter = 0)' in message
    assert 'loss_flow = ' in message and 'inf' not in message.split('Loss terms')[1].split('.')[0]
    assert 'parameters: ' in message and 'optimizer step was not taken' in message
    after = dict(runner.model.named_parameters())
    assert all(torch.equal(v, after[k]) for k, v in recorder.before_iter.items())  # no update
    assert not os.path.exists(tmp_path / 'iter_1.pth')


def test_amp_steps_the_loss_scaler_skips_are_counted_not_errors():
    """fp16 AMP's scaler finds an overflow itself and skips the optimizer
    step: no error, one skipped step counted; the next step is checked."""
    from types import SimpleNamespace

    from mmengine.logging import MessageHub
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 16)
    runner = SimpleNamespace(model=model, iter=0, message_hub=MessageHub.get_instance('amp-skipped-steps'),
                             optim_wrapper=SimpleNamespace(optimizer=optimizer, loss_scaler=scaler,
                                                           clip_grad_kwargs={}))
    hook = FiniteGradientHook()
    hook.before_train(runner)
    checked = []
    optimizer.register_step_pre_hook(lambda *args: checked.append(1))
    for scale in (1e38, 1.0):  # the first overflows once the scaler multiplies it
        hook.before_train_iter(runner, 0)
        optimizer.zero_grad()
        scaler.scale(model(torch.ones(1, 2)).sum() * scale).backward()
        scaler.step(optimizer)
        scaler.update()
        hook.after_train_iter(runner, 0)
    assert hook.amp_skipped_steps == 1 and len(checked) == 1
    assert runner.message_hub.get_scalar('train/amp_skipped_steps').current() == 1
    hook.after_train(runner)


def test_a_gradient_norm_beyond_the_bound_stops_the_run(teacher_checkpoint, tmp_path):
    """FiniteGradientHook(max_norm=...) reads the norm before clipping."""
    cfg = tiny_cfg('fmkt', tmp_path, teacher_checkpoint, max_iters=2)
    cfg.custom_hooks = [h for h in cfg.custom_hooks if 'FiniteGradientHook' not in str(h.get('type'))]
    cfg.custom_hooks.append(dict(type='fmkt_mm.FiniteGradientHook', max_norm=1e-9))
    runner = Runner.from_cfg(cfg)
    with pytest.raises(NonFiniteGradientError, match=r'exceeds FiniteGradientHook\(max_norm=1e-09\)'):
        runner.train()
    assert sum(isinstance(h, FiniteGradientHook) for h in runner.hooks) == 1


def test_loss_parsing_equals_mmengines_with_fewer_operators():
    """Scalar terms, a per-sample term, a list of terms and a logged-only
    value: the total and every logged value are MMEngine's, and no scalar
    term is averaged again."""
    from mmengine.model import BaseModel
    from torch.utils._python_dispatch import TorchDispatchMode

    from fmkt_mm.distill.base import parse_loss_terms

    class Counter(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Counter.calls += 1
            return func(*args, **(kwargs or {}))

    losses = dict(loss_cls=torch.tensor(0.7), loss_bbox=torch.tensor([0.1, 0.4]),
                  loss_list=[torch.tensor(0.2), torch.tensor([0.3, 0.5])], acc=torch.tensor(0.9))
    theirs_total, theirs = BaseModel.parse_losses(None, losses)
    ours_total, ours = parse_loss_terms(losses)
    assert list(ours) == list(theirs)
    torch.testing.assert_close(ours_total, theirs_total)
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key])
    scalars = dict(loss_a=torch.tensor(1.0), loss_b=torch.tensor(2.0))
    with Counter():
        parse_loss_terms(scalars)
    assert Counter.calls == 1  # the one addition
    with pytest.raises(TypeError, match='loss_x is not a tensor'):
        parse_loss_terms(dict(loss_x=1.0))


# -- hooks -----------------------------------------------------------------------------------


def test_stop_distillation_hook_switches_to_the_task_loss(teacher_checkpoint, tmp_path):
    cfg = tiny_cfg('fmkt_theta', tmp_path, teacher_checkpoint, max_iters=4)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(StopDistillationHook(stop_iter=2))
    recorder = Recorder(runner.model)
    runner.register_hook(recorder)
    runner.train()
    assert all('loss_flow' in names and 'loss_theta' in names for names in recorder.loss_names[:2])
    assert recorder.loss_names[2:] == [['loss', 'loss_cls']] * 2
    assert len(recorder.teacher_calls) == 2  # the teacher no longer runs
    with pytest.raises(ValueError, match='stop_iter or stop_epoch'):
        StopDistillationHook()


def test_fmkt_after_the_stop_keeps_training_its_flow_on_the_task(teacher_checkpoint, tmp_path):
    """FM-KT predicts through the flow: after the stop, the task loss of the
    flow's steps still trains it."""
    runner = Runner.from_cfg(tiny_cfg('fmkt', tmp_path, teacher_checkpoint, max_iters=2))
    runner.register_hook(StopDistillationHook(stop_iter=1))
    recorder = Recorder(runner.model)
    runner.register_hook(recorder)
    runner.train()
    assert recorder.loss_names[1] == ['loss', 'loss_cls'] and len(recorder.teacher_calls) == 1
    flow_before = {k: v for k, v in recorder.before_iter.items() if k.startswith('flows.0.encoder')}
    moved = [k for k, v in flow_before.items() if not torch.equal(v, dict(runner.model.named_parameters())[k])]
    assert moved


@pytest.mark.slow
def test_loss_weight_schedule_follows_the_iteration(teacher_checkpoint, tmp_path):
    cfg = tiny_cfg('fmkt_theta', tmp_path, teacher_checkpoint, max_iters=4)
    runner = Runner.from_cfg(cfg)
    base = runner.model.flow_loss_weight
    runner.register_hook(LossWeightScheduleHook(dict(
        flow_loss_weight=dict(type='linear', begin=0, end=4, start_factor=0.0, end_factor=1.0),
        theta_loss_weight=dict(type='step', milestones=[2], factors=[1.0, 0.5]))))
    seen = []

    class Watch(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            seen.append((runner.model.flow_loss_weight, runner.model.theta_loss_weight,
                         float(outputs['loss_flow'].detach())))

    runner.register_hook(Watch(), 'LOWEST')
    runner.train()
    assert [s[0] for s in seen] == pytest.approx([0.0, 0.25 * base, 0.5 * base, 0.75 * base])
    assert [s[1] for s in seen] == [1.0, 1.0, 0.5, 0.5]
    assert seen[0][2] == 0.0 and seen[1][2] > 0.0  # the loss follows the weight
    assert 'train/weight_factor/flow_loss_weight' in runner.message_hub.log_scalars
    assert schedule_factor(dict(type='cosine', begin=0, end=10), 5) == pytest.approx(0.5)
    bad = Runner.from_cfg(tiny_cfg('fmkt_theta', tmp_path / 'bad', teacher_checkpoint, max_iters=1))
    bad.register_hook(LossWeightScheduleHook(dict(flow_weight=dict(type='constant', factor=1.0))))
    with pytest.raises(AttributeError, match="no attribute 'flow_weight'.*flow_loss_weight"):
        bad.train()


def test_export_student_hook_writes_a_plain_student_beside_each_checkpoint(teacher_checkpoint, tmp_path):
    cfg = tiny_cfg('fmkt_theta', tmp_path, teacher_checkpoint, max_iters=2)
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    runner = Runner.from_cfg(cfg)
    runner.register_hook(ExportStudentHook(), 'LOWEST')
    runner.train()
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith('.pth')) == \
        ['iter_2.pth', 'iter_2_student.pth']  # the export of iter_1 went with its checkpoint
    exported = torch.load(tmp_path / 'iter_2_student.pth', weights_only=True)
    plain = plain_model('student_resnet18_w4.py')
    plain.load_state_dict(exported['state_dict'], strict=True)
    for key, value in runner.model.student.state_dict().items():
        assert torch.equal(plain.state_dict()[key], value), key


def test_teacher_eval_hook_logs_the_teacher_and_stops_a_bad_one(teacher_checkpoint, tmp_path):
    runner = Runner.from_cfg(tiny_cfg('fmkt_theta', tmp_path / 'ok', teacher_checkpoint, max_iters=1))
    hook = TeacherEvalHook()
    runner.register_hook(hook)
    runner.train()
    assert 0.0 <= hook.metrics['accuracy/top1'] <= 100.0
    assert runner.message_hub.get_info('teacher/accuracy/top1') == hook.metrics['accuracy/top1']

    runner = Runner.from_cfg(tiny_cfg('fmkt_theta', tmp_path / 'bad', teacher_checkpoint, max_iters=1))
    runner.register_hook(TeacherEvalHook(min_metrics={'accuracy/top1': 101.0}))
    recorder = Recorder()
    runner.register_hook(recorder)
    with pytest.raises(RuntimeError, match='teacher is below the configured minimum'):
        runner.train()
    assert recorder.loss_names == []  # stopped before the first iteration


def test_load_from_logs_how_many_student_tensors_it_mapped(teacher_checkpoint, tmp_path, capsys):
    student = plain_model('student_resnet18_w4.py')
    torch.save({'state_dict': student.state_dict()}, tmp_path / 'plain.pth')
    cfg = tiny_cfg('fmkt_theta', tmp_path / 'run', teacher_checkpoint)
    cfg.load_from = str(tmp_path / 'plain.pth')
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    n = len(student.state_dict())
    log = open(runner.log_file).read() if hasattr(runner, 'log_file') else ''
    log += capsys.readouterr().out
    assert f'mapped {n}/{n} student tensors' in log


def test_step_counts_are_checked_once_for_flows_distillers_and_hooks():
    """One check of step counts (``check_step_counts``), with one message,
    wherever a count enters: a flow, a hook, a distiller."""
    from fmkt_mm.flow import FlowTransfer
    from fmkt_mm.flow.plan import check_step_counts
    from fmkt_mm.hooks import FlowStepsHook
    assert check_step_counts(1, 8) == (1, 8)
    for bad in (0, -2, 2.0, True, '4'):
        with pytest.raises(ValueError, match=r'flow steps must be integers >= 1, got \['):
            check_step_counts(4, bad)
        with pytest.raises(ValueError, match='flow steps must be integers >= 1'):
            FlowStepsHook(test_steps=(1, bad))
    with pytest.raises(ValueError, match='flow steps must be integers >= 1, got \\[0\\]'):
        FlowTransfer(8, num_steps=0)
    with pytest.raises(ValueError, match='at least one number of flow steps'):
        FlowStepsHook(test_steps=())
