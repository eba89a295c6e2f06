"""The launch-efficient transfer loop equals the textbook serial loop.

The loop in :class:`~fmkt_mm.flow.FlowTransfer` folds every path formula into
per-step Python constants, computes the time conditioning once per run and
applies the head and the metric loss once to the stacked steps. These tests
pin it to the loop written out step by step from the path's own formulas.
"""
import pytest
import torch
from flow_steps import step_losses  # noqa: E402
from torch import nn

from fmkt_mm.flow import FieldEncoder, FlowTransfer, RectifiedPath, VEPath, VPPath
from fmkt_mm.flow.encoders import sinusoidal_embedding

FLOW_PATHS = dict(rectified=RectifiedPath(), vp=VPPath('linear'), trig=VPPath('trig'), ve=VEPath())


def reference_run(flow: FlowTransfer, x: torch.Tensor, n: int, context=None, velocities=None):
    """The serial loop of the method, one formula at a time, as written in
    the paper (scalar times as tensors, the head and the time embedding
    recomputed at every step)."""
    path, enc = flow.solver.path, flow.encoder
    vector = x.dim() == 2
    state = path.b(1.0).to(x.dtype) * x
    estimates, steps = [], []
    for i in range(n, 0, -1):
        t, t_next = torch.tensor(i / n, dtype=torch.float64), torch.tensor((i - 1) / n, dtype=torch.float64)
        scaled = state * torch.as_tensor(path.input_scale(t)).to(x.dtype)
        z = scaled[:, :, None, None] if vector else scaled
        cond = enc.time_mlp(sinusoidal_embedding(torch.full((x.shape[0],), float(t)), enc.time_dim))
        if context is not None:
            cond = cond + enc.context_mlp(context)
        out = enc.body(z + cond[:, :, None, None])
        out = out[:, :, 0, 0] if vector else out
        if flow.solver.parameterization == 'velocity':
            velocity, endpoint = out, path.endpoint_from_velocity(state, out, t)
        else:
            endpoint = state + out
            velocity = path.velocity_from_endpoint(state, endpoint, t)
        estimates.append(endpoint)
        if velocities is not None:
            velocities.append(velocity)
        steps.append(flow.head(endpoint))
        state = path.step(state, endpoint, velocity, t, t_next, flow.solver.update) if i > 1 else endpoint
    return torch.stack(estimates), torch.stack(steps), state


def random_encoder(flow, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.encoder.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


@pytest.mark.parametrize('path', sorted(FLOW_PATHS))
@pytest.mark.parametrize('parameterization,update', [('velocity', 'ddim'), ('velocity', 'euler'),
                                                      ('endpoint', 'ddim'), ('endpoint', 'euler')])
@pytest.mark.parametrize('shape', [(3, 6), (2, 6, 3, 3)])
def test_loop_equals_the_step_by_step_formulas(path, parameterization, update, shape):
    torch.manual_seed(0)
    head = nn.Linear(6, 4) if len(shape) == 2 else None
    flow = FlowTransfer(6, path=FLOW_PATHS[path], encoder='mlp', num_steps=4, head=head,
                        parameterization=parameterization, update=update)
    random_encoder(flow)
    x = torch.randn(shape)
    for n in (1, 3, 4):
        out = flow.run(x, n)
        estimates, steps, state = reference_run(flow, x, n)
        torch.testing.assert_close(out.estimates, estimates, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.steps, steps, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.ensemble, steps.mean(0), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.state, state, rtol=1e-4, atol=1e-5)


def test_conditional_loop_equals_the_step_by_step_formulas():
    torch.manual_seed(1)
    flow = FlowTransfer(5, encoder='mlp', num_steps=3, condition=dict(type='pooled'))
    random_encoder(flow, seed=3)
    x = torch.randn(4, 5, 2, 2)
    context = flow.make_context(x)
    out = flow.run(x)
    estimates, steps, _ = reference_run(flow, x, 3, context)
    torch.testing.assert_close(out.estimates, estimates, rtol=1e-4, atol=1e-5)
    # gradients through the loop are those of the reference
    weights = torch.randn(3, 4, 5, 2, 2)
    grads = torch.autograd.grad((out.estimates * weights).sum(), list(flow.encoder.parameters()))
    ref = torch.autograd.grad((estimates * weights).sum(), list(flow.encoder.parameters()))
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('shape', [(3, 6), (2, 6, 1, 1), (2, 6, 3, 3)])
@pytest.mark.parametrize('n', [1, 4])
def test_gradients_through_the_loop_equal_the_reference(shape, n):
    """Every step's output enters the mixing product through one stack
    (whose backward is one unbind), and vectors normalise without permutes:
    the gradients of the encoder, the head and the input are still those
    of the step-by-step loop."""
    torch.manual_seed(2)
    head = nn.Linear(6, 4) if len(shape) == 2 else None
    flow = FlowTransfer(6, encoder='mlp', num_steps=n, head=head)
    random_encoder(flow, seed=5)
    x = torch.randn(shape, requires_grad=True)
    out = flow.run(x)
    estimates, steps, _ = reference_run(flow, x, n)
    weights = torch.randn(steps.shape)
    params = [x] + list(flow.parameters())
    grads = torch.autograd.grad((out.steps * weights).sum(), params)
    ref = torch.autograd.grad((steps * weights).sum(), params)
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def test_a_single_position_is_normalised_as_layer_norm_over_channels():
    from fmkt_mm.flow.encoders import ChannelLayerNorm
    torch.manual_seed(3)
    norm = ChannelLayerNorm(8)
    with torch.no_grad():
        norm.norm.weight.normal_()
        norm.norm.bias.normal_()
    x = torch.randn(4, 8, 1, 1, requires_grad=True)
    ours = norm(x)
    reference = norm.norm(x.flatten(1))[:, :, None, None]  # nn.LayerNorm over the channels
    torch.testing.assert_close(ours, reference)
    weights = torch.randn(ours.shape)
    grads = torch.autograd.grad((ours * weights).sum(), [x, *norm.parameters()])
    ref = torch.autograd.grad((reference * weights).sum(), [x, *norm.parameters()])
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r)


class CountingHead(nn.Module):
    def __init__(self, channels, classes, batch_norm=False):
        super().__init__()
        self.norm = nn.BatchNorm1d(channels) if batch_norm else nn.Identity()
        self.fc = nn.Linear(channels, classes)
        self.calls = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.fc(self.norm(x))



def test_head_and_loss_run_once_per_run_on_the_stacked_steps():
    from fmkt_mm.losses import KDLoss
    calls = []

    class Counted(KDLoss):
        def compute_steps(self, steps, teacher, labels=None):
            calls.append(tuple(steps.shape))
            return super().compute_steps(steps, teacher, labels)

    head = CountingHead(6, 3)
    flow = FlowTransfer(6, encoder='mlp', num_steps=8, head=head, loss=Counted())
    x, target = torch.randn(5, 6), torch.randn(5, 3)
    losses, out = step_losses(flow, x, target)
    assert head.calls == [8 * 5]  # one call on the N * B rows
    assert calls == [(8, 5, 3)]  # one call of the metric loss on all steps
    per_step = [KDLoss()(out.steps[k], target) / 8 for k in range(8)]
    torch.testing.assert_close(torch.stack(list(losses.values())), torch.stack(per_step))


def test_a_batch_norm_head_in_training_sees_one_step_at_a_time():
    head = CountingHead(6, 3, batch_norm=True)
    flow = FlowTransfer(6, encoder='mlp', num_steps=4, head=head).train()
    out = flow.run(torch.randn(5, 6))
    assert head.calls == []  # the head runs when the steps are first read
    out.steps
    assert head.calls == [5, 5, 5, 5]  # batch statistics never mix steps
    head.calls.clear()
    flow.eval().run(torch.randn(5, 6)).steps
    assert head.calls == [20]


def test_time_tables_are_cached_per_step_count_and_not_saved():
    flow = FlowTransfer(4, encoder='mlp', num_steps=4)
    flow.run(torch.randn(2, 4))
    flow.run(torch.randn(3, 4))
    flow.run(torch.randn(3, 4), 2)
    assert len(flow.encoder._time_tables) == 2
    assert not any('time_table' in k for k in flow.state_dict())


def test_compiled_step_equals_the_eager_step():
    torch.manual_seed(0)
    eager = FlowTransfer(6, encoder='mlp', num_steps=4, loss=dict(type='MSELoss'))
    random_encoder(eager)
    compiled = FlowTransfer(6, encoder='mlp', num_steps=4, loss=dict(type='MSELoss'),
                            compile=dict(backend='aot_eager'))
    compiled.load_state_dict(eager.state_dict())
    x, target = torch.randn(3, 6, 2, 2), torch.randn(3, 6, 2, 2)
    a, b = step_losses(eager, x, target), step_losses(compiled, x, target)
    for (key, value) in a[0].items():
        torch.testing.assert_close(b[0][key], value, rtol=1e-5, atol=1e-6)
    ga = torch.autograd.grad(sum(a[0].values()), list(eager.encoder.parameters()))
    gb = torch.autograd.grad(sum(b[0].values()), list(compiled.encoder.parameters()))
    for x_, y_ in zip(ga, gb):
        torch.testing.assert_close(y_, x_, rtol=1e-5, atol=1e-6)
    # a compiled flow still deep-copies (EMA copies, DDP) and pickles
    import copy
    import pickle
    clone = copy.deepcopy(compiled)
    torch.testing.assert_close(clone(x), compiled(x))
    pickle.loads(pickle.dumps(compiled))


def test_a_plain_field_runs_through_the_encoder_interface():
    """A module ``field(state, t, context)`` is wrapped into the loop's one
    encoder interface: it sees vectors as vectors and ``(B,)`` times, and
    the loop calls it once per step."""
    seen = []

    class Field(nn.Module):
        def forward(self, x, t, context=None):
            seen.append((tuple(x.shape), tuple(t.shape)))
            return 0.5 * x

    flow = FlowTransfer(4, encoder=Field(), num_steps=2, update='euler')
    assert isinstance(flow.encoder, FieldEncoder) and isinstance(flow.encoder.field, Field)
    x = torch.randn(3, 4)
    torch.testing.assert_close(flow.run(x).state, x * 0.75 * 0.75)  # Z <- Z - 0.5 Z / 2, twice
    assert seen == [((3, 4), (3, )), ((3, 4), (3, ))]


@pytest.mark.parametrize('path', ['rectified', 'vp', 've'])
@pytest.mark.parametrize('shape', [(3, 5), (2, 5, 3, 3)])
def test_student_estimate_is_the_authors_logit_mode(path, shape):
    """``estimate='student'``: every step's estimate is read from the student
    representation itself, ``X_S - v_i`` on the rectified path (the path's
    t = 1 endpoint formula in general), while the state moves serially."""
    torch.manual_seed(0)
    flow = FlowTransfer(5, path=path, encoder=dict(type='mlp', hidden_ratio=1.0), num_steps=4,
                        estimate='student')
    random_encoder(flow)
    x = torch.randn(*shape)
    velocities = []
    reference_run(flow, x, 4, velocities=velocities)  # the serial run as written in the paper
    start = flow.solver.path.b(1.0).to(x.dtype) * x
    expected = torch.stack([flow.solver.path.endpoint_from_velocity(start, v, torch.tensor(1.0, dtype=torch.float64))
                            for v in velocities])
    estimates = flow.run(x, 4).estimates
    torch.testing.assert_close(estimates, expected, rtol=1e-5, atol=1e-5)
    if path == 'rectified':
        torch.testing.assert_close(estimates, x[None] - torch.stack(velocities), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs estimate='state'"):
        flow.roundtrip(x, 4)


def test_drawn_step_counts_follow_torch_seed_and_the_progressive_cap():
    flow = FlowTransfer(4, num_steps=16, num_steps_choices=(1, 2, 4, 8, 16))
    torch.manual_seed(3)
    first = [flow.draw_num_steps() for _ in range(200)]
    torch.manual_seed(3)
    assert [flow.draw_num_steps() for _ in range(200)] == first  # seeded runs repeat
    assert set(first) == {1, 2, 4, 8, 16}
    flow.set_train_steps(4)
    assert {flow.draw_num_steps() for _ in range(100)} == {1, 2, 4}
    flow.set_train_steps(16)
    assert flow.objective.num_steps_choices == (1, 2, 4, 8, 16)


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for backward while ``fn`` runs."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    return total, out


@pytest.mark.parametrize('mode', [True, 'step'])
@pytest.mark.parametrize('encoder', ['mlp', 'conv'])
def test_recompute_keeps_no_step_activations_and_changes_nothing(encoder, mode):
    """``recompute=True`` (activation checkpointing of the loop) and
    ``'step'`` (of each meta-encoder call): the same estimates and
    gradients, and what autograd keeps for backward no longer grows with the
    steps' activations."""
    torch.manual_seed(0)
    plain = FlowTransfer(8, encoder=dict(type=encoder), num_steps=4, loss=dict(type='MSELoss'))
    random_encoder(plain)
    recomputed = FlowTransfer(8, encoder=dict(type=encoder), num_steps=4, loss=dict(type='MSELoss'),
                              recompute=mode)
    recomputed.load_state_dict(plain.state_dict())
    x, target = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    grads, kept, losses = [], [], []
    for flow in (plain, recomputed):
        xs = x.clone().requires_grad_()
        bytes_kept, loss = saved_bytes(lambda: flow.step_losses(flow.run(xs), target).sum())
        kept.append(bytes_kept)
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, [xs] + list(flow.encoder.parameters())))
    assert torch.equal(losses[0], losses[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert kept[1] < 0.5 * kept[0], kept
    with torch.no_grad():  # inference never checkpoints
        torch.testing.assert_close(plain(x), recomputed(x), rtol=0, atol=0)


def test_an_unknown_recompute_mode_names_the_known_ones():
    with pytest.raises(ValueError, match="recompute='steps': use False, True \\(or 'loop'"):
        FlowTransfer(8, encoder=dict(type='mlp'), recompute='steps')
