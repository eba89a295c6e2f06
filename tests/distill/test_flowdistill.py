"""FlowDistill: the invertible map (reverse sampler, round-trip errors),
progressive distillation (the schedule hook) and conditional flows, from the
flow core up to short runs through MMEngine's Runner."""
import json
import logging
import math
import os.path as osp
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import pytest
import torch
from flow_steps import step_losses  # noqa: E402
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from torch import nn

import fmkt_mm  # noqa: F401
from fmkt_mm.apis import apply_distiller, prepare_work_dir
from fmkt_mm.datasets.idx import fashion_mnist_paths, fashion_mnist_root
from fmkt_mm.distill import ClassificationDistiller, DetectionDistiller
from fmkt_mm.distill.base import BaseDistiller
from fmkt_mm.flow import (
    ClassCondition,
    CompositeCondition,
    FlowTransfer,
    LevelCondition,
    PooledCondition,
    RectifiedPath,
    RoundTrip,
    VPPath,
    build_condition,
)
from fmkt_mm.hooks import ProgressiveDistillationHook
from fmkt_mm.registry import HOOKS
from tiny_runs import retinanet

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CLS_CONFIGS = osp.join(ROOT, 'configs', 'fashion_mnist')
DET_CONFIGS = osp.join(ROOT, 'configs', 'fashion_det')
STEPS = (1, 2, 4, 8, 16)

needs_data = pytest.mark.skipif(
    not all(osp.isfile(p) for split in ('train', 'test') for p in fashion_mnist_paths(split)),
    reason=f'Fashion-MNIST not found in {fashion_mnist_root()} (install Debian\'s '
    'dataset-fashion-mnist or set $FMKT_FASHION_MNIST_ROOT)')


#: tiny models: one torch thread (conftest.one_thread)
ONE_THREAD = True


# -- 1. the invertible map -------------------------------------------------------------


def linear_coupling(channels=5, seed=0):
    """A toy problem: the teacher is ``X_T = A X_S`` with ``A`` symmetric positive definite."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(channels, channels, generator=gen, dtype=torch.float64)
    return torch.eye(channels, dtype=torch.float64) + 0.5 * q @ q.T / channels


class OracleField(nn.Module):
    """The exact (marginal) velocity field of the path between ``X_S`` and
    ``X_T = A X_S``: the state ``Z_t = (a(t) A + b(t) I) X_S`` determines
    ``X_S``, hence both endpoints and the velocity."""

    def __init__(self, path, a_matrix):
        super().__init__()
        self.path, self.a_matrix = path, a_matrix

    def forward(self, state, t, context=None):
        t = t[0].double()
        eye = torch.eye(self.a_matrix.shape[0], dtype=torch.float64)
        source = torch.linalg.solve(self.path.a(t) * self.a_matrix + self.path.b(t) * eye, state.T).T
        return self.path.true_velocity(source @ self.a_matrix.T, source, t)


class CurvedField(nn.Module):
    """A fixed smooth field with curved trajectories: a stand-in for a trained
    meta-encoder whose flow is not straight."""

    def __init__(self, channels=6, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(channels, channels, generator=gen, dtype=torch.float64) / channels ** 0.5

    def forward(self, state, t, context=None):
        return torch.tanh(state @ self.weight.T) * (1 + t[:, None])


def roundtrips(flow_for, x, x_teacher=None, refine=0, steps=STEPS):
    out = {}
    for n in steps:
        errors = flow_for(n).roundtrip(x, n, x_teacher=x_teacher, refine=refine)
        out[n] = (errors['s2t2s'].relative, errors['t2s2t'].relative)
    return out


def assert_decreasing_to_zero(errors, final_below):
    for direction in (0, 1):
        values = [errors[n][direction] for n in STEPS]
        assert all(a > b for a, b in zip(values, values[1:])), values
        assert values[-1] < final_below, values
        # a first-order error: doubling N about halves it
        assert 1.6 < values[-2] / values[-1] < 2.6, values


def test_oracle_roundtrip_error_vanishes_as_steps_grow():
    """Rectified path, exact flow: the forward pass lands on the teacher at
    every N; the explicit reverse sampler comes back up to an O(1/N) error."""
    a_matrix = linear_coupling()
    path = RectifiedPath()
    x = torch.randn(32, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_teacher = x @ a_matrix.T

    def flow_for(n):
        return FlowTransfer(5, path=path, encoder=OracleField(path, a_matrix), num_steps=n)

    for n in STEPS:  # it is the oracle: the forward pass is exact
        torch.testing.assert_close(flow_for(n).run(x).state, x_teacher)
    errors = roundtrips(flow_for, x, x_teacher)
    assert_decreasing_to_zero(errors, final_below=0.05)
    # the reverse sampler alone maps the teacher back onto the student, to the same order
    back = flow_for(16).reverse(x_teacher)
    assert RoundTrip.between(back, x).relative < 0.05


def test_curved_flow_roundtrip_error_vanishes_as_steps_grow():
    field = CurvedField()
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for update in ('euler', 'ddim'):
        errors = roundtrips(lambda n: FlowTransfer(6, encoder=field, num_steps=n, update=update), x)
        assert_decreasing_to_zero(errors, final_below=0.05)


def test_refinement_reaches_the_exact_inverse_when_each_step_contracts():
    a_matrix = linear_coupling()
    path = RectifiedPath()
    x = torch.randn(32, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def flow_for(n):
        return FlowTransfer(5, path=path, encoder=OracleField(path, a_matrix), num_steps=n)

    # N = 16: Lip(v) / N < 1, every fixed-point iteration helps, geometrically
    by_refine = [roundtrips(flow_for, x, refine=k, steps=(16, ))[16][0] for k in (0, 1, 2, 5)]
    assert all(a > 5 * b for a, b in zip(by_refine, by_refine[1:])), by_refine
    assert roundtrips(flow_for, x, refine=20, steps=(8, ))[8][0] < 1e-12
    # N = 1: the step is not a contraction and the iteration diverges; the
    # explicit reverse is then the better estimate (the documented condition)
    at_one = [roundtrips(flow_for, x, refine=k, steps=(1, ))[1][0] for k in (0, 5)]
    assert at_one[1] > at_one[0]


def test_vp_path_oracle_roundtrip_converges_too():
    a_matrix = linear_coupling()
    path = VPPath('trig')
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    errors = roundtrips(lambda n: FlowTransfer(5, path=path, encoder=OracleField(path, a_matrix),
                                               num_steps=n), x, steps=(4, 8, 16, 32))
    values = [errors[n][0] for n in (4, 8, 16, 32)]
    assert all(a > b for a, b in zip(values, values[1:])) and values[-1] < 0.05, values


def test_roundtrip_loss_is_differentiable_and_trains_the_flow_straighter():
    torch.manual_seed(0)
    flow = FlowTransfer(6, encoder='mlp', num_steps=2, loss=dict(type='MSELoss'))
    nn.init.normal_(flow.encoder.output.weight, std=0.5)
    x = torch.randn(16, 6)
    out = flow.run(x)
    loss = flow.roundtrip_loss(x, out)
    assert loss.item() > 0
    loss.backward()
    assert flow.encoder.output.weight.grad.abs().sum() > 0
    # a few steps of cycle consistency alone lower the round-trip error
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    before = flow.roundtrip(x, 2)['s2t2s'].relative
    for _ in range(20):
        opt.zero_grad()
        flow.roundtrip_loss(x, flow.run(x)).backward()
        opt.step()
    assert flow.roundtrip(x, 2)['s2t2s'].relative < 0.5 * before


def test_roundtrip_sums_add_over_batches():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    whole = RoundTrip.between(a, b)
    parts = RoundTrip.between(a[:2], b[:2]) + RoundTrip.between(a[2:], b[2:])
    assert whole.relative == pytest.approx(parts.relative)
    assert whole.relative == pytest.approx(float((a - b).norm() / b.norm()))


# -- 3. conditional flow networks ------------------------------------------------------------


def conditional_flow(condition, channels=6, **kwargs):
    torch.manual_seed(0)
    flow = FlowTransfer(channels, encoder='mlp', num_steps=3, loss=dict(type='MSELoss'),
                        condition=condition, **kwargs)
    nn.init.normal_(flow.encoder.output.weight, std=0.3)  # a zero output layer ignores everything
    return flow


def test_pooled_condition_uses_its_context_and_passes_gradients():
    flow = conditional_flow(dict(type='pooled', dim=4))
    assert isinstance(flow.condition, PooledCondition) and flow.encoder.context_dim == 4
    x = torch.randn(3, 6, 4, 4)
    ctx = flow.make_context(x)
    assert ctx.shape == (3, 4)
    torch.testing.assert_close(flow(x), flow(x, context=ctx))
    other = torch.randn(3, 4, requires_grad=True)
    assert not torch.allclose(flow(x, context=ctx), flow(x, context=other))
    flow(x, context=other).pow(2).sum().backward()
    assert other.grad is not None and other.grad.abs().sum() > 0
    # the same feature map with another pooled summary changes the context
    shifted = x + torch.linspace(-1, 1, 6)[None, :, None, None]
    assert not torch.allclose(flow.make_context(x), flow.make_context(shifted))
    flow.zero_grad()
    losses, _ = step_losses(flow, x, torch.randn(3, 6, 4, 4))
    sum(losses.values()).backward()
    assert flow.condition.proj.weight.grad.abs().sum() > 0
    assert flow.encoder.context_mlp[0].weight.grad.abs().sum() > 0


def test_level_condition_tells_a_shared_encoder_which_level_it_transports():
    condition = LevelCondition(num_levels=3, dim=5)
    first = conditional_flow(condition, condition_level=0)
    second = FlowTransfer(6, encoder=first.encoder, num_steps=3, condition=condition, condition_level=2)
    assert second.encoder is first.encoder
    x = torch.randn(2, 6, 3, 3)
    assert not torch.allclose(first(x), second(x))
    out = second(x)
    out.sum().backward()
    grads = condition.embedding.weight.grad
    assert grads[2].abs().sum() > 0 and grads[0].abs().sum() == 0
    with pytest.raises(ValueError, match='level 3'):
        condition(x, level=3)


def test_teacher_condition_gives_each_sample_its_teachers_embedding():
    condition = build_condition(['pooled', dict(type='teacher', dim=4)], channels=6, num_teachers=3)
    flow = conditional_flow(condition)
    x = torch.randn(2, 6, 3, 3)
    stacked = torch.cat([x, x])  # the batch once per teacher: teachers 0 and 2
    context = flow.make_context(stacked, teacher=torch.tensor([0, 0, 2, 2]))
    assert context.shape == (4, 6 + 4)
    teacher = condition.conditions[1]
    torch.testing.assert_close(context[:2, 6:], teacher.embedding.weight[0].expand(2, -1))
    torch.testing.assert_close(context[2:, 6:], teacher.embedding.weight[2].expand(2, -1))
    out = flow.run(stacked, 3, context)
    parts = out.split(2)  # one output per copy, as if each ran alone
    for j, part in zip((0, 2), parts):
        alone = flow.run(x, 3, flow.make_context(x, teacher=torch.full((2,), j)))
        torch.testing.assert_close(part.steps, alone.steps)
        torch.testing.assert_close(part.ensemble, alone.ensemble)
    with pytest.raises(ValueError, match='teacher index of every sample'):
        flow.make_context(x)
    with pytest.raises(ValueError, match='3 teacher indices for a batch of 2'):
        flow.make_context(x, teacher=torch.tensor([0, 1, 2]))


def test_class_condition_reads_labels_in_training_and_its_guess_at_inference():
    head = nn.Sequential(nn.Flatten(), nn.Linear(6, 4))
    flow = conditional_flow(dict(type='class', num_classes=4, dim=3, drop_prob=0.0,
                                 inference='predicted'), channels=6, head=head)
    x = torch.randn(5, 6)
    flow.train()
    a = flow(x, context=flow.make_context(x, torch.zeros(5, dtype=torch.long)))
    b = flow(x, context=flow.make_context(x, torch.ones(5, dtype=torch.long)))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(flow.make_context(x, torch.tensor([2, 0, 1, 3, 2])),
                               flow.condition.embedding.weight[[2, 0, 1, 3, 2]])
    flow.eval()  # no label at inference: the head's guess on X_S
    guess = head(x).argmax(1)
    torch.testing.assert_close(flow.make_context(x, torch.zeros(5, dtype=torch.long)),
                               flow.condition.embedding.weight[guess])
    flow.condition.inference = 'soft'
    soft = head(x).softmax(1) @ flow.condition.embedding.weight[:4]
    torch.testing.assert_close(flow.make_context(x), soft.detach())
    flow.condition.inference = 'none'
    assert torch.equal(flow.make_context(x), flow.condition.embedding.weight[4].expand(5, -1))
    # the label is dropped to "no class" with drop_prob
    assert (ClassCondition(num_classes=4).inference, ClassCondition(num_classes=4).drop_prob) == ('none', 0.5)
    dropping = ClassCondition(num_classes=4, dim=3, drop_prob=1.0).train()
    assert torch.equal(dropping(x, labels=torch.zeros(5, dtype=torch.long)),
                       dropping.embedding.weight[4].expand(5, -1))


def test_composite_condition_and_configuration_errors():
    condition = build_condition([dict(type='pooled'), dict(type='level', dim=3)], channels=6, num_levels=2)
    assert isinstance(condition, CompositeCondition) and condition.dim == 9
    flow = conditional_flow(condition)
    x = torch.randn(2, 6)
    assert flow.make_context(x).shape == (2, 9)
    with pytest.raises(ValueError, match='fixed context'):
        flow.reverse(x)
    flow.reverse(x, context=flow.make_context(x))
    with pytest.raises(ValueError, match='unknown flow condition'):
        build_condition(dict(type='image'), channels=6)
    with pytest.raises(ValueError, match='num_classes'):
        build_condition('class', channels=6)
    with pytest.raises(ValueError, match='context_dim'):
        FlowTransfer(6, encoder=dict(type='mlp', context_dim=2), condition='pooled')


# -- 2. progressive distillation: the hook with a runner stand-in --------------------------------


class FlowsOnly(BaseDistiller):
    """A distiller with flows only (no student or teacher is built)."""

    def __init__(self):
        nn.Module.__init__(self)
        self.flows = nn.ModuleList([FlowTransfer(4, num_steps=8),
                                    FlowTransfer(4, num_steps=8, num_steps_choices=(1, 2, 4, 8))])
        self.eval_steps, self.extra_eval_steps = 8, []

    def forward(self, *args, **kwargs):
        raise NotImplementedError('a stand-in for the hooks only')


class StandInModel(FlowsOnly):
    """... with two distilled levels and a curriculum, as the detection and
    classification distillers check them."""
    check_level_scales = DetectionDistiller.check_level_scales
    check_curriculum = ClassificationDistiller.check_curriculum

    def __init__(self):
        super().__init__()
        self.level_pairs = [(0, 0), (1, 1)]
        self.level_scales = [1.0, 1.0]
        self.curriculum_fraction = 1.0


def stand_in_runner(model):
    records = []
    logger = logging.getLogger(f'progressive-{uuid.uuid4().hex}')
    logger.info = records.append
    hub = MessageHub.get_instance(f'progressive-{uuid.uuid4().hex}')
    return SimpleNamespace(model=model, iter=0, epoch=0, logger=logger, message_hub=hub), records


def test_progressive_hook_changes_the_settings_at_the_milestones():
    hook = HOOKS.build(dict(type='ProgressiveDistillationHook',
                            num_steps=dict(milestones=[10, 20], values=[1, 2, 4]),
                            level_weights=dict(milestones=[15], values=[[0, 1], [1, 1]]),
                            curriculum=dict(milestones=[5], values=[0.5, 1.0])))
    assert isinstance(hook, ProgressiveDistillationHook)
    model = StandInModel()
    runner, log = stand_in_runner(model)
    seen = {}
    hook.before_train(runner)
    for it in range(25):
        runner.iter = it
        hook.before_train_iter(runner, it)
        seen[it] = (model.flows[0].num_steps, model.flows[1].objective.num_steps_choices, model.eval_steps,
                    list(model.level_scales), model.curriculum_fraction)
    assert seen[0] == (1, (1, ), 1, [0.0, 1.0], 0.5)
    assert seen[4] == seen[0]
    assert seen[5][4] == 1.0 and seen[9][0] == 1
    assert seen[10][:3] == (2, (1, 2), 2)
    assert seen[15][3] == [1.0, 1.0] and seen[14][3] == [0.0, 1.0]
    assert seen[20][:3] == (4, (1, 2, 4), 4) and seen[24] == seen[20]
    # each change is logged once, at its milestone
    assert [line.split(':')[0] for line in log] == [
        f'progressive distillation at iter {i}' for i in (0, 5, 10, 15, 20)]
    assert 'num_steps 2 -> 4' in log[-1]
    hub = runner.message_hub
    assert hub.get_scalar('train/progressive/num_steps').current() == 4.0
    assert hub.get_scalar('train/progressive/level_scale0').current() == 1.0
    assert hub.get_scalar('train/progressive/curriculum').current() == 1.0

    # a resumed run starts at its own iteration with the right settings
    fresh = StandInModel()
    runner, _ = stand_in_runner(fresh)
    runner.iter = 12
    hook.before_train(runner)
    assert fresh.flows[0].num_steps == 2 and fresh.curriculum_fraction == 1.0


def test_progressive_hook_by_epoch_and_configuration_errors():
    hook = ProgressiveDistillationHook(num_steps=dict(milestones=[1], values=[2, 8]), by_epoch=True,
                                       follow_eval_steps=False)
    model = StandInModel()
    runner, _ = stand_in_runner(model)
    runner.iter = 100  # iterations do not count
    hook.before_train(runner)
    assert model.flows[0].num_steps == 2 and model.eval_steps == 8
    runner.epoch = 1
    hook.before_train_iter(runner, 0)
    assert model.flows[0].num_steps == 8

    with pytest.raises(ValueError, match='2 milestones need 3 values'):
        ProgressiveDistillationHook(num_steps=dict(milestones=[1, 2], values=[1, 2]))
    with pytest.raises(ValueError, match='increasing'):
        ProgressiveDistillationHook(num_steps=dict(milestones=[5, 2], values=[1, 2, 4]))
    with pytest.raises(ValueError, match=r'\(0, 1\]'):
        ProgressiveDistillationHook(curriculum=dict(milestones=[1], values=[0.0, 1.0]))
    with pytest.raises(ValueError, match='at least one'):
        ProgressiveDistillationHook()
    bad = ProgressiveDistillationHook(level_weights=dict(milestones=[], values=[[1, 1, 1]]))
    with pytest.raises(ValueError, match='3 entries for 2 distilled levels'):
        bad.before_train(stand_in_runner(StandInModel())[0])
    with pytest.raises(ValueError, match='progressive level_weights: FlowsOnly has no distilled '
                                         'levels.*DetectionDistiller'):
        ProgressiveDistillationHook(level_weights=dict(milestones=[], values=[[1]])).before_train(
            stand_in_runner(FlowsOnly())[0])
    with pytest.raises(ValueError, match='progressive curriculum: FlowsOnly has no per-sample targets'):
        ProgressiveDistillationHook(curriculum=dict(milestones=[], values=[0.5])).before_train(
            stand_in_runner(FlowsOnly())[0])
    plain = nn.Module()
    plain.flow = FlowTransfer(4)
    with pytest.raises(ValueError, match='needs an fmkt_mm distiller, got Module'):
        ProgressiveDistillationHook(num_steps=dict(milestones=[], values=[2])).before_train(
            stand_in_runner(plain)[0])


def test_curriculum_keeps_the_easiest_samples_for_the_distillation_loss():
    logits = torch.tensor([[5.0, 0.0], [0.1, 0.0], [0.0, 9.0], [1.0, 0.0]])  # confidence order 2, 0, 3, 1
    stand_in = SimpleNamespace(curriculum_fraction=0.5)
    mask = ClassificationDistiller.curriculum_mask(stand_in, logits)
    assert mask.tolist() == [True, False, True, False]
    stand_in.curriculum_fraction = 0.3  # ceil(0.3 * 4) = 2 samples
    assert ClassificationDistiller.curriculum_mask(stand_in, logits).sum() == 2
    stand_in.curriculum_fraction = 1.0
    assert ClassificationDistiller.curriculum_mask(stand_in, logits) is None

    torch.manual_seed(0)
    flow = FlowTransfer(2, num_steps=2, loss=dict(type='MSELoss'))
    nn.init.normal_(flow.encoder.output.weight, std=0.3)
    x, target = torch.randn(4, 2), torch.randn(4, 2)
    out = flow.run(x)
    masked = flow.step_losses(out, target, sample_mask=mask)
    subset = torch.stack([((s[mask] - target[mask]) ** 2).mean() / 2 for s in out.steps])
    torch.testing.assert_close(masked, subset)
    empty = flow.step_losses(out, target, sample_mask=torch.zeros(4, dtype=torch.bool))
    assert empty.shape == (2, ) and bool((empty == 0).all())
    empty.sum().backward()  # still connected: DDP sees every parameter used
    assert flow.encoder.output.weight.grad is not None


# -- through MMEngine's Runner: classification -------------------------------------------------


def tiny_cls_cfg(config, work_dir, teacher_checkpoint, **distiller):
    cfg = Config.fromfile(osp.join(CLS_CONFIGS, config))
    cfg.train_dataloader.batch_size = 4
    cfg.train_dataloader.dataset.num_samples = 8  # 2 iterations per epoch
    for loader in ('val_dataloader', 'test_dataloader'):
        cfg[loader].batch_size = 8
        cfg[loader].dataset.num_samples = 16
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.randomness = dict(seed=0, deterministic=True)
    if cfg.distiller.get('teacher') is not None:
        cfg.distiller.teacher.checkpoint = teacher_checkpoint
    cfg.distiller.update(distiller)
    cfg.experiment_name = f'{osp.splitext(config)[0]}-{uuid.uuid4().hex[:8]}'
    apply_distiller(cfg)
    prepare_work_dir(cfg, config, str(work_dir))
    return cfg


def grads_after_one_loss(model, data):
    model.train()
    loss, _ = model.parse_losses(model(**model.data_preprocessor(data, True), mode='loss'))
    loss.backward()


@needs_data
def test_runner_classification_conditional(teacher_checkpoint, tmp_path):
    runner = Runner.from_cfg(tiny_cls_cfg('fmkt_resnet18_w16_to_resnet18_w4_conditional.py', tmp_path,
                                          teacher_checkpoint))
    model = runner.model
    assert isinstance(model.flow_of(0).condition, PooledCondition)
    assert model.flow_of(0).encoder.context_dim == model.flow_of(0).channels
    runner.train()
    assert math.isfinite(runner.message_hub.get_scalar('train/loss_flow').current())
    assert 'val/accuracy/top1' in runner.message_hub.log_scalars
    # after an update, the context reaches the loss: the context MLP has a gradient
    model.zero_grad()
    batch = next(iter(runner.train_dataloader))
    grads_after_one_loss(model, batch)
    assert model.flow_of(0).encoder.context_mlp[0].weight.grad.abs().sum() > 0


@needs_data
def test_runner_classification_class_conditional_theta(teacher_checkpoint, tmp_path):
    """The class condition composes with FM-KT^Theta (the flow trains with a
    label embedding; the deployed student never runs it)."""
    cfg = tiny_cls_cfg('fmkt_resnet18_w16_to_resnet18_w4_conditional-class.py', tmp_path,
                       teacher_checkpoint, deploy_mode='student',
                       theta_loss=dict(type='fmkt_mm.KDLoss', tau=4.0))
    runner = Runner.from_cfg(cfg)
    assert isinstance(runner.model.flow_of(0).condition, ClassCondition)
    assert runner.model.flow_of(0).condition.num_classes == 10
    runner.train()
    assert 'train/loss_theta' in runner.message_hub.log_scalars
    assert 0.0 <= runner.test()['accuracy/top1'] <= 100.0


@needs_data
@pytest.mark.parametrize('name, inference, drop_prob', [('conditional-class-soft', 'soft', 0.1),
                                                        ('conditional-class-none', 'none', 0.5)])
def test_class_condition_configs(name, inference, drop_prob, teacher_checkpoint, tmp_path):
    cfg = tiny_cls_cfg(f'fmkt_resnet18_w16_to_resnet18_w4_{name}.py', tmp_path, teacher_checkpoint)
    condition = Runner.from_cfg(cfg).model.flow_of(0).condition
    assert isinstance(condition, ClassCondition)
    assert (condition.inference, condition.drop_prob) == (inference, drop_prob)


@needs_data
def test_runner_classification_progressive(teacher_checkpoint, tmp_path):
    cfg = tiny_cls_cfg('fmkt_resnet18_w16_to_resnet18_w4_progressive.py', tmp_path, teacher_checkpoint)
    hook = [h for h in cfg.custom_hooks if h.type == 'fmkt_mm.ProgressiveDistillationHook'][0]
    hook.update(by_epoch=False, num_steps=dict(milestones=[1], values=[2, 4]),
                curriculum=dict(milestones=[1], values=[0.5, 1.0]))
    runner = Runner.from_cfg(cfg)
    steps_seen = []
    original = runner.model.flow_of(0).run
    runner.model.flow_of(0).run = lambda x, n=None, *a, **k: steps_seen.append(n) or original(x, n, *a, **k)
    runner.train()
    assert steps_seen[:2] == [2, 4]  # the two training iterations
    logs = runner.message_hub.log_scalars
    assert logs['train/progressive/num_steps'].current() == 4.0
    assert logs['train/progressive/curriculum'].current() == 1.0
    # iteration 0 distilled on half of its 4 samples
    assert logs['train/curriculum_kept'].data[0][0] == 0.5
    assert {'train/flow_step1', 'train/flow_step4'} <= set(logs)


@needs_data
def test_runner_classification_roundtrip_and_online_curriculum(teacher_checkpoint, tmp_path):
    runner = Runner.from_cfg(tiny_cls_cfg('fmkt_resnet18_w16_to_resnet18_w4_roundtrip.py', tmp_path,
                                          teacher_checkpoint))
    runner.train()
    logs = runner.message_hub.log_scalars
    assert 'train/loss_roundtrip' in logs
    for direction in ('s2t2s', 't2s2t'):
        for n in (1, 2, 4, 8):
            value = logs[f'val/flow/roundtrip_{direction}_steps{n}'].current()
            assert 0.0 <= value < 1e-2  # an all but untrained flow is all but the identity
        assert f'val/flow/roundtrip_{direction}' in logs
    runner.test()
    assert 'test/flow/roundtrip_s2t2s_steps8' in runner.message_hub.log_scalars

    # OFM-KT composes with the curriculum (ranked by its own ensemble) and the round trip
    cfg = tiny_cls_cfg('ofmkt_resnet18_w4.py', tmp_path / 'online', None, roundtrip_loss_weight=0.1)
    cfg.custom_hooks += [dict(type='fmkt_mm.ProgressiveDistillationHook',
                              curriculum=dict(milestones=[], values=[0.5])),
                         dict(type='fmkt_mm.FlowRoundTripHook', num_steps=2, max_batches=1)]
    runner = Runner.from_cfg(cfg)
    runner.train()
    logs = runner.message_hub.log_scalars
    assert logs['train/curriculum_kept'].current() == 0.5 and 'train/loss_roundtrip' in logs
    assert 'val/flow/roundtrip_t2s2t' in logs


# -- detection ---------------------------------------------------------------------------------

SIZE = 64


@pytest.fixture(scope='module')
def det():
    """mmdet helpers, imported only by the detection tests."""
    pytest.importorskip('mmdet')
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return True


def det_batch(model, n=2):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(0)
    samples, images = [], []
    for i in range(n):
        images.append((torch.rand(3, SIZE, SIZE, generator=gen) * 255).byte())
        sample = DetDataSample(metainfo=dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE),
                                             scale_factor=(1.0, 1.0), img_id=i))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[8.0, 10.0, 40.0, 50.0]]),
                                           labels=torch.tensor([i]))
        samples.append(sample)
    return dict(inputs=images, data_samples=samples)


def det_distiller(det_teacher, **kwargs):
    from fmkt_mm.distill import DetectionDistiller
    model, path = det_teacher
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DetectionDistiller(student=retinanet(8, 32), teacher=dict(config=model, checkpoint=path),
                                  dummy_input_shape=(3, SIZE, SIZE), **kwargs)


def test_detection_shared_conditional_encoder_level_scales_and_roundtrip(det_teacher):
    model = det_distiller(det_teacher, flow=dict(encoder=dict(type='mlp', hidden_ratio=1.0),
                                                 condition=[dict(type='level', dim=8), 'pooled']),
                          shared_encoder=True, roundtrip_loss_weight=0.1)
    encoders = {id(f.encoder) for f in model.flows}
    assert len(encoders) == 1 and model.flows[0].encoder.context_dim == 8 + 32
    assert [f.condition_level for f in model.flows] == [0, 1, 2, 3]
    for flow in model.flows:
        nn.init.normal_(flow.encoder.output.weight, std=0.1)
    model.set_level_scales([0.0, 1.0, 1.0, 1.0])
    model.train()
    data = model.data_preprocessor(det_batch(model), True)
    losses = model(**data, mode='loss')
    assert losses['loss_flow_l0'].item() == 0.0 and losses['loss_flow_l1'].item() > 0
    assert {f'loss_roundtrip_l{k}' for k in range(4)} <= set(losses)
    loss, _ = model.parse_losses(losses)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert model.flows[0].condition.conditions[0].embedding.weight.grad[:4].abs().sum(1).gt(0).all()

    model.eval()
    data = model.data_preprocessor(det_batch(model), False)
    errors = model.roundtrip_errors(data['inputs'], data['data_samples'], num_steps=4)
    assert {'s2t2s', 't2s2t'} | {f'{d}_l{k}' for d in ('s2t2s', 't2s2t') for k in range(4)} == set(errors)
    total = sum((errors[f's2t2s_l{k}'] for k in range(1, 4)), errors['s2t2s_l0'])
    assert total.relative == pytest.approx(errors['s2t2s'].relative)
    assert all(math.isfinite(e.relative) for e in errors.values())

    with pytest.raises(ValueError, match="'class'"):
        det_distiller(det_teacher, flow=dict(condition=dict(type='class', num_classes=10)))


def det_runner_cfg(config, work_dir, data_root, det_teacher, max_iters=2):
    cfg = Config.fromfile(osp.join(DET_CONFIGS, config))
    cfg.model = retinanet(8, 32)
    model, path = det_teacher
    cfg.distiller.teacher = dict(config=model, checkpoint=path)
    cfg.distiller.dummy_input_shape = (3, SIZE, SIZE)
    root = data_root.rstrip('/') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].batch_size = 2
        cfg[loader].dataset.data_root = root
        for step in cfg[loader].dataset.pipeline:
            if step.type == 'Resize':
                step.scale = (SIZE, SIZE)
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = root + 'annotations/instances_val.json'
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=max_iters, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.pop('visualization', None)
    cfg.log_processor = dict(by_epoch=False)
    cfg.experiment_name = f'{osp.basename(str(work_dir))}_{time.time_ns()}'
    cfg.visualizer.name = cfg.experiment_name  # one visualizer instance per runner
    apply_distiller(cfg)
    prepare_work_dir(cfg, config, str(work_dir))
    return cfg


@needs_data
@pytest.mark.parametrize('capability', ['conditional', 'progressive', 'roundtrip'])
def test_runner_detection(capability, coco_set, det_teacher, tmp_path):
    config = f'fmkt_retinanet_r18_to_r18w16_{capability}.py'
    cfg = det_runner_cfg(config, tmp_path / capability, coco_set, det_teacher)
    if capability == 'progressive':  # the epoch milestones, moved onto the 2 iterations
        cfg.custom_hooks[0].update(by_epoch=False, num_steps=dict(milestones=[1], values=[1, 2]),
                                   level_weights=dict(milestones=[1], values=[[0, 0, 1, 1], [1, 1, 1, 1]]))
    runner = Runner.from_cfg(cfg)
    runner.train()
    logs = runner.message_hub.log_scalars
    assert runner.iter == 2 and 'train/loss_flow_l3' in logs
    if capability == 'conditional':
        assert len({id(f.encoder) for f in runner.model.flows}) == 1
        assert runner.model.flows[0].condition is not None
    if capability == 'progressive':
        assert logs['train/loss_flow_l0'].data[0][0] == 0.0  # P3 is off at iteration 0
        assert logs['train/loss_flow_l0'].data[0][1] > 0.0
        assert logs['train/progressive/num_steps'].current() == 2.0
        assert runner.model.level_scales == [1.0, 1.0, 1.0, 1.0]
        assert {'train/flow_l0_step1', 'train/flow_l0_step2'} <= set(logs)
    if capability == 'roundtrip':
        assert 'train/loss_roundtrip_l0' in logs
        for key in ('s2t2s', 't2s2t', 's2t2s_l0', 't2s2t_l3'):
            assert math.isfinite(logs[f'val/flow/roundtrip_{key}'].current())


# -- the benchmark -----------------------------------------------------------------------------


@pytest.mark.slow
@needs_data
def test_benchmark_quick_smoke(tmp_path):
    """One row a task, end to end (each row's config trains in the Runner tests above)."""
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'benchmarks', 'flowdistill.py'), '--quick',
                          '--task', 'all', '--threads', '1', '--work-dir', str(tmp_path),
                          '--rows', 'progressive', '--det-rows', 'conditional'],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '| model | top-1 (%) | s / iter | s->t->s N=1 | s->t->s N=8 | t->s->t N=8 |' in out.stdout
    with open(tmp_path / 'quick' / 'flowdistill_results.json') as f:
        results = json.load(f)
    rows = {r['row']: r for r in results['rows']}
    assert set(rows) == {'progressive'}
    for row in rows.values():
        assert 0.0 <= row['top1'] <= 100.0 and row['seconds_per_iter'] > 0
        assert all(v is not None and v >= 0 for v in row['roundtrip'].values())
    assert '| model | bbox mAP | mAP@50 | s / iter | s->t->s N=1 | s->t->s N=4 | t->s->t N=4 |' in out.stdout
    with open(tmp_path / 'quick' / 'flowdistill_det_results.json') as f:
        det = {r['row']: r for r in json.load(f)['rows']}
    assert set(det) == {'conditional'}
    for row in det.values():
        assert 0.0 <= row['mAP'] <= 100.0 and row['seconds_per_iter'] > 0
        assert all(v is not None and v >= 0 for v in row['roundtrip'].values())
