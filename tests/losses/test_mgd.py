"""MGD (masked generative distillation): the loss against its written-out
formula, its stacked form, and the feature distiller building one MGD module
per level of a tiny RetinaNet."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from flow_steps import step_losses  # noqa: E402
from mmengine.config import Config
from mmengine.registry import DefaultScope

import fmkt_mm  # noqa: F401
from fmkt_mm.apis import apply_distiller
from fmkt_mm.distill import FeatureDistiller
from fmkt_mm.flow import LOSSES
from fmkt_mm.losses import MGDLoss
from fmkt_mm.registry import MODELS
from tiny_runs import DET_CONFIGS, SIZE, det_batch, retinanet

#: tiny models: one torch thread (conftest.one_thread)
ONE_THREAD = True


def seeded(seed, fn):
    """``fn()`` with torch's global generator seeded, the generator's state
    restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def written_out(loss: MGDLoss, student, teacher, seed):
    """The authors' formula, step by step: the mask drawn as they draw it
    (``torch.where(rand > 1 - lambda, 0, 1)``), the align conv, the
    generation block, ``alpha * sum((G - T)^2) / B``, times ``loss_weight``."""
    b, _, h, w = student.shape
    mat = seeded(seed, lambda: torch.rand((b, 1, h, w)))
    mask = torch.where(mat > 1 - loss.lambda_mgd, 0, 1)
    aligned = F.conv2d(student, loss.align.weight, loss.align.bias) if loss.align is not None else student
    conv1, conv2 = loss.generation[0], loss.generation[2]
    hidden = F.relu(F.conv2d(aligned * mask, conv1.weight, conv1.bias, padding=1))
    generated = F.conv2d(hidden, conv2.weight, conv2.bias, padding=1)
    return loss.loss_weight * loss.alpha_mgd * ((generated - teacher) ** 2).sum() / b


@pytest.mark.parametrize('student_channels', [3, 4], ids=['align', 'no-align'])
def test_mgd_equals_the_written_out_formula_values_and_gradients(student_channels):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    loss = MGDLoss(student_channels, 4, alpha_mgd=0.5, lambda_mgd=0.65, loss_weight=2.0)
    student = torch.randn(2, student_channels, 5, 6, generator=gen, requires_grad=True)
    teacher = (torch.randn(2, 4, 5, 6, generator=gen) * 3).requires_grad_()
    value = seeded(7, lambda: loss(student, teacher))
    expected = written_out(loss, student, teacher, 7)
    assert value.dim() == 0 and value.dtype == torch.float32
    torch.testing.assert_close(value, expected)

    params = [student] + list(loss.parameters())
    got = torch.autograd.grad(value, params)
    want = torch.autograd.grad(expected, params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    # the teacher is a target: no gradient reaches it
    teacher_grad, = torch.autograd.grad(seeded(7, lambda: loss(student, teacher)), [teacher], allow_unused=True)
    assert teacher_grad is None


def test_mgd_default_weights_are_the_authors_detection_values():
    loss = MGDLoss(256, 256)
    assert (loss.alpha_mgd, loss.lambda_mgd, loss.loss_weight) == (2e-5, 0.65, 1.0)
    assert isinstance(MODELS.build(dict(type='fmkt_mm.MGDLoss', student_channels=8, teacher_channels=8)), MGDLoss)


def test_the_align_conv_exists_only_when_the_widths_differ():
    same = MGDLoss(8, 8)
    assert same.align is None
    assert not any(name.startswith('align') for name, _ in same.named_parameters())
    assert [tuple(p.shape) for p in same.generation.parameters()] == [(8, 8, 3, 3), (8,), (8, 8, 3, 3), (8,)]
    other = MGDLoss(5, 8)
    assert isinstance(other.align, torch.nn.Conv2d)
    assert (other.align.in_channels, other.align.out_channels, other.align.kernel_size) == (5, 8, (1, 1))
    assert other.generation[0].in_channels == 8  # the generation block works at the teacher's width
    out = other(torch.randn(2, 5, 4, 4), torch.randn(2, 8, 4, 4))
    out.backward()
    assert other.align.weight.grad is not None and other.generation[0].weight.grad is not None


def test_mgd_shape_errors_name_both_shapes_and_the_fix():
    loss = MGDLoss(4, 6)
    with pytest.raises(ValueError, match=r'\(2, 5, 3, 3\) vs teacher \(2, 6, 3, 3\).*student_channels=5'):
        loss(torch.randn(2, 5, 3, 3), torch.randn(2, 6, 3, 3))
    with pytest.raises(ValueError, match=r'\(2, 4, 3, 3\) vs teacher \(2, 7, 3, 3\).*teacher_channels=7'):
        loss(torch.randn(2, 4, 3, 3), torch.randn(2, 7, 3, 3))
    with pytest.raises(ValueError, match=r"\(2, 4, 3, 3\) vs teacher \(2, 6, 6, 6\).*FeatureAdapter"):
        loss(torch.randn(2, 4, 3, 3), torch.randn(2, 6, 6, 6))
    with pytest.raises(ValueError, match=r'\(2, 4\) vs teacher \(2, 6\).*\(B, C, H, W\)'):
        loss(torch.randn(2, 4), torch.randn(2, 6))
    with pytest.raises(ValueError, match='lambda_mgd'):
        MGDLoss(4, 4, lambda_mgd=1.5)
    with pytest.raises(ValueError, match='student_channels'):
        MGDLoss(0, 4)


def test_the_mask_drops_lambda_of_the_positions_from_the_global_generator():
    loss = MGDLoss(4, 4, lambda_mgd=0.65)
    mask = seeded(0, lambda: loss.random_mask((8, 1, 64, 64), torch.device('cpu'), torch.float32))
    assert mask.shape == (8, 1, 64, 64) and set(mask.unique().tolist()) <= {0.0, 1.0}
    # 32768 draws: the masked fraction's standard deviation is 0.0026
    assert abs(1.0 - mask.mean().item() - 0.65) < 0.01
    again = seeded(0, lambda: loss.random_mask((8, 1, 64, 64), torch.device('cpu'), torch.float32))
    assert torch.equal(mask, again)  # the same seed, the same mask
    other = seeded(1, lambda: loss.random_mask((8, 1, 64, 64), torch.device('cpu'), torch.float32))
    assert not torch.equal(mask, other)
    # the mask is the authors' draw: where(rand > 1 - lambda, 0, 1)
    draw = seeded(0, lambda: torch.rand(8, 1, 64, 64))
    assert torch.equal(mask, torch.where(draw > 1 - 0.65, 0.0, 1.0))
    for ratio, kept in ((0.0, 1.0), (1.0, 0.0)):
        full = MGDLoss(4, 4, lambda_mgd=ratio).random_mask((2, 1, 8, 8), torch.device('cpu'), torch.float32)
        assert torch.all(full == kept)
    # a seeded run repeats: the same loss value
    s, t = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    assert torch.equal(seeded(3, lambda: loss(s, t)), seeded(3, lambda: loss(s, t)))


@pytest.mark.parametrize('per_step_target', [False, True], ids=['shared', 'per-step'])
def test_stacked_mgd_equals_the_per_step_losses_under_the_same_seed(per_step_target):
    """Each step gets its own mask; one generation call runs all the steps."""
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(1)
    loss = MGDLoss(3, 5, loss_weight=3.0, alpha_mgd=0.1)
    n, b = 4, 2
    steps = torch.randn(n, b, 3, 6, 7, generator=gen, requires_grad=True)
    teacher = torch.randn(n, b, 5, 6, 7, generator=gen) if per_step_target else torch.randn(b, 5, 6, 7,
                                                                                             generator=gen)
    calls = []
    handle = loss.generation.register_forward_hook(lambda *args: calls.append(1))
    stacked = seeded(5, lambda: loss.forward_steps(steps, teacher, scale=0.5))
    handle.remove()
    assert stacked.shape == (n, ) and len(calls) == 1
    targets = teacher if per_step_target else [teacher] * n
    per_step = seeded(5, lambda: torch.stack([loss(steps[k], targets[k]) for k in range(n)])) * 0.5
    torch.testing.assert_close(stacked, per_step)
    weights = torch.arange(1.0, n + 1)
    got = torch.autograd.grad((stacked * weights).sum(), [steps] + list(loss.parameters()))
    want = torch.autograd.grad((per_step * weights).sum(), [steps] + list(loss.parameters()))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    # steps draw different masks: two equal steps get different losses
    same = steps.detach()[:1].expand(2, -1, -1, -1, -1)
    twin = seeded(5, lambda: loss.forward_steps(same, teacher[0] if per_step_target else teacher))
    assert twin[0] != twin[1]
    with pytest.raises(ValueError, match=r'\(2, 4, 6, 7\) vs teacher \(2, 5, 6, 7\)'):
        loss.forward_steps(torch.randn(n, b, 4, 6, 7), teacher)


def test_mgd_is_a_metric_loss_of_the_flow_catalog():
    assert LOSSES.get('MGDLoss') is MGDLoss and LOSSES.get('fmkt_mm.MGDLoss') is MGDLoss
    built = LOSSES.build(dict(type='MGDLoss', student_channels=4, teacher_channels=4))
    assert isinstance(built, MGDLoss)


def test_mgd_as_a_flows_metric_loss_trains_its_generation_block():
    """The flow's steps have the teacher's width: the config gives both."""
    from fmkt_mm.flow import FlowTransfer
    torch.manual_seed(0)
    flow = FlowTransfer(6, encoder=dict(type='conv', channels=6), num_steps=3,
                        loss=dict(type='MGDLoss', student_channels=6, teacher_channels=6, alpha_mgd=1e-2))
    assert isinstance(flow.loss_fn, MGDLoss)
    assert any(name.startswith('loss_fn.generation') for name, _ in flow.named_parameters())
    losses, _ = step_losses(flow, torch.randn(2, 6, 4, 4), torch.randn(2, 6, 4, 4))
    assert sorted(losses) == [f'loss_flow_step{k}' for k in (1, 2, 3)]
    sum(losses.values()).backward()
    assert flow.loss_fn.generation[0].weight.grad.abs().sum() > 0


# -- the feature distiller -----------------------------------------------------------------


def mgd_distiller(det_teacher, fpn, **kwargs):
    teacher, path = det_teacher
    kwargs.setdefault('loss', dict(type='fmkt_mm.MGDLoss'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        return FeatureDistiller(retinanet(8, fpn), dict(config=teacher, checkpoint=path),
                                dummy_input_shape=(3, SIZE, SIZE), **kwargs)


def test_feature_distiller_builds_one_mgd_per_level_and_trains_it(det_teacher):
    torch.manual_seed(0)
    model = mgd_distiller(det_teacher, 16, level_weights=[1.0, 2.0, 3.0, 4.0])  # student FPN 16, teacher 32
    assert model.feat_loss is None and len(model.level_losses) == 4
    assert len({id(m) for m in model.level_losses}) == 4
    for mgd in model.level_losses:
        assert (mgd.student_channels, mgd.teacher_channels) == (16, 32)
        assert isinstance(mgd.align, torch.nn.Conv2d)  # the loss aligns: no adapter needed
    assert all(isinstance(a, torch.nn.Identity) for a in model.adapters)
    # the optimizer sees the generation blocks: they are the distiller's parameters
    names = {name for name, _ in model.named_parameters()}
    assert {f'level_losses.{i}.generation.0.weight' for i in range(4)} <= names
    assert 'level_losses.0.align.weight' in names

    model.train()
    data = det_batch(model)
    with DefaultScope.overwrite_default_scope('mmdet'):
        losses = model(**data, mode='loss')
    assert {f'loss_feat_l{level}' for level in range(4)} <= set(losses)
    assert {'loss_cls', 'loss_bbox'} <= set(losses)
    total, _ = model.parse_losses(losses)
    total.backward()
    for mgd in model.level_losses:
        assert all(p.grad is not None for p in mgd.parameters())
        assert mgd.generation[2].weight.grad.abs().sum() > 0
    # every position of the 1x1 top level may be masked; the 8x8 first level keeps some
    assert all(p.grad.abs().sum() > 0 for p in model.level_losses[0].parameters())
    assert all(p.grad is not None for p in model.student.parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.teacher.parameters())

    # one optimizer step moves the generation blocks
    before = model.level_losses[0].generation[0].weight.detach().clone()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(before, model.level_losses[0].generation[0].weight)


def test_feature_distiller_level_loss_is_mgd_of_the_level(det_teacher):
    """``loss_feat_l{l}`` is the level's weight times that level's own MGD."""
    torch.manual_seed(0)
    model = mgd_distiller(det_teacher, 32, levels=(0, 2), level_weights=[2.0, 5.0],
                          loss=dict(type='MGDLoss', alpha_mgd=1e-3, lambda_mgd=0.5))
    assert [m.align for m in model.level_losses] == [None, None]  # 32 -> 32 channels
    assert [m.lambda_mgd for m in model.level_losses] == [0.5, 0.5]
    model.train()
    data = det_batch(model)
    with DefaultScope.overwrite_default_scope('mmdet'):
        losses = seeded(3, lambda: model(**data, mode='loss'))
        # the student's loss draws no random numbers before the MGD masks: reproduce them
        with torch.no_grad():
            teacher = model.teacher_levels(data['inputs'], data['data_samples'])
            student = model.student.neck(model.student.backbone(data['inputs']))

    def expected():
        return [w * mgd(student[s], teacher[t]) for (s, t), mgd, w in
                zip(model.level_pairs, model.level_losses, model.level_weights)]
    want = seeded(3, expected)
    torch.testing.assert_close(losses['loss_feat_l0'].detach(), want[0])
    torch.testing.assert_close(losses['loss_feat_l2'].detach(), want[1])


def test_feature_distiller_mgd_state_dict_round_trip(det_teacher, tmp_path):
    torch.manual_seed(0)
    model = mgd_distiller(det_teacher, 16)
    with torch.no_grad():
        for p in model.level_losses.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / 'distiller.pth'
    torch.save(model.state_dict(), path)
    state = torch.load(path)
    mgd_keys = {k for k in state if k.startswith('level_losses.')}
    assert {f'level_losses.{i}.{part}' for i in range(4)
            for part in ('align.weight', 'align.bias', 'generation.0.weight', 'generation.2.bias')} <= mgd_keys

    torch.manual_seed(1)
    fresh = mgd_distiller(det_teacher, 16)
    assert not torch.equal(fresh.level_losses[0].generation[0].weight, model.level_losses[0].generation[0].weight)
    fresh.load_state_dict(state, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # the deployed student holds none of them
    assert not any('generation' in k or 'align' in k for k in model.student_state_dict())


def test_feature_distiller_mgd_errors(det_teacher):
    with pytest.raises(ValueError, match=r'student_channels=8.*16 -> 32 channels'):
        mgd_distiller(det_teacher, 16, loss=dict(type='MGDLoss', student_channels=8, teacher_channels=32))
    # a spatial mismatch needs an adapter: refused with adapter=None, built by itself by default
    with pytest.raises(ValueError, match=r'\(1, 16, 4, 4\).*\(1, 32, 8, 8\).*FeatureAdapter'):
        mgd_distiller(det_teacher, 16, levels=[(1, 0)], adapter=None)
    auto = mgd_distiller(det_teacher, 16, levels=[(1, 0)])
    assert (auto.level_losses[0].student_channels, auto.level_losses[0].align) == (32, None)
    # with an adapter, the loss sees the teacher's width and needs no align conv
    model = mgd_distiller(det_teacher, 16, levels=[(1, 0)], adapter=dict(type='FeatureAdapter'))
    assert (model.level_losses[0].student_channels, model.level_losses[0].align) == (32, None)
    model.train()
    data = det_batch(model)
    with DefaultScope.overwrite_default_scope('mmdet'):
        losses = model(**data, mode='loss')
    assert losses['loss_feat_l1'].requires_grad


def test_feature_distiller_keeps_one_shared_loss_for_other_losses(det_teacher):
    model = mgd_distiller(det_teacher, 32, loss=dict(type='fmkt_mm.PKDLoss'))
    assert model.level_losses is None and type(model.feat_loss).__name__ == 'PKDLoss'
    assert not any(k.startswith('level_losses') for k in model.state_dict())


def test_mgd_config_builds(tmp_path):
    cfg = apply_distiller(Config.fromfile(osp.join(DET_CONFIGS, 'mgd_retinanet_r18_to_r18w16.py')))
    assert cfg.model.type == 'fmkt_mm.FeatureDistiller'
    assert cfg.model.loss == dict(type='fmkt_mm.MGDLoss', alpha_mgd=2e-5, lambda_mgd=0.65)
    assert cfg.model.levels == (0, 1, 2, 3)
    # the shipped model pair, built with a stand-in teacher checkpoint
    from fmkt_mm.distill.teacher import build_model, model_config
    model_cfg = cfg.model.to_dict()
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        t_cfg, scope, preprocessor = model_config(model_cfg['teacher']['config'], 'teacher')
        t_cfg.setdefault('data_preprocessor', preprocessor)
        checkpoint = tmp_path / 'teacher.pth'
        torch.save(build_model(t_cfg, scope).state_dict(), checkpoint)
        model_cfg['teacher']['checkpoint'] = str(checkpoint)
        model_cfg['data_preprocessor'] = cfg.get('data_preprocessor')
        distiller = MODELS.build(model_cfg)
    assert [(m.student_channels, m.teacher_channels, m.align) for m in distiller.level_losses] == \
        [(128, 128, None)] * 4
    assert all(m.alpha_mgd == 2e-5 and m.lambda_mgd == 0.65 for m in distiller.level_losses)
