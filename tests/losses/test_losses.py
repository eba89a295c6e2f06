"""Tests of the distillation losses against independent float64 references."""
import math
import warnings

import numpy as np
import pytest
import torch
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import DefaultScope, Registry

import fmkt_mm.losses  # noqa: F401  (registers the losses)
from fmkt_mm.losses import DISTLoss, DKDLoss, KDLoss, MetricLoss, MSELoss, PKDLoss
from fmkt_mm.registry import MODELS

ALL_LOSSES = ['KDLoss', 'DKDLoss', 'DISTLoss', 'PKDLoss', 'MSELoss']

# A registry in a scope other than fmkt_mm, as mmdet's or mmpretrain's is.
OTHER_SCOPE = 'fmkt_mm_tests_other'
OTHER_MODELS = Registry('model', parent=MMENGINE_MODELS, scope=OTHER_SCOPE)


def make_inputs(name, seed=0, dtype=torch.float32):
    """Student, teacher, labels suited to the loss ``name``."""
    gen = torch.Generator().manual_seed(seed)
    shape = (2, 4, 6, 6) if name == 'PKDLoss' else (4, 5)
    student = torch.randn(shape, generator=gen).to(dtype)
    teacher = torch.randn(shape, generator=gen).to(dtype)
    labels = torch.tensor([0, 3, 1, 4]) if name == 'DKDLoss' else None
    return student, teacher, labels


# ---------------------------------------------------------------------------
# Independent references: float64 numpy, explicit loops over samples.


def softmax_np(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def kd_ref(zs, zt, tau):
    zs, zt = np.asarray(zs, np.float64), np.asarray(zt, np.float64)
    total = 0.0
    for i in range(zs.shape[0]):
        ps, pt = softmax_np(zs[i] / tau), softmax_np(zt[i] / tau)
        total += sum(pt[c] * math.log(pt[c] / ps[c]) for c in range(len(ps)))
    return tau**2 * total / zs.shape[0]


def kl_np(p, q):
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0))


def dkd_ref(zs, zt, labels, alpha, beta, tau):
    zs, zt = np.asarray(zs, np.float64), np.asarray(zt, np.float64)
    tckd = nckd = 0.0
    for i, g in enumerate(labels):
        ps, pt = softmax_np(zs[i] / tau), softmax_np(zt[i] / tau)
        tckd += kl_np([pt[g], 1 - pt[g]], [ps[g], 1 - ps[g]])
        # Non-target distribution: renormalise the C - 1 other classes.
        others = [c for c in range(len(ps)) if c != g]
        qs = [ps[c] / (1 - ps[g]) for c in others]
        qt = [pt[c] / (1 - pt[g]) for c in others]
        nckd += kl_np(qt, qs)
    batch = zs.shape[0]
    return tau**2 * (alpha * tckd + beta * nckd) / batch


def pearson_np(a, b, eps=1e-8):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + eps))


def dist_ref(zs, zt, beta, gamma, tau):
    ys = softmax_np(np.asarray(zs, np.float64) / tau)
    yt = softmax_np(np.asarray(zt, np.float64) / tau)
    batch, classes = ys.shape
    inter = 1 - np.mean([pearson_np(ys[i], yt[i]) for i in range(batch)])
    intra = 1 - np.mean([pearson_np(ys[:, j], yt[:, j])
                         for j in range(classes)])
    return tau**2 * (beta * inter + gamma * intra)


def standardize_np(x):
    """Per channel over (N, H, W): unbiased std, eps 1e-6 on the std."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        v = x[:, c]
        out[:, c] = (v - v.mean()) / (v.std(ddof=1) + 1e-6)
    return out


def pkd_ref(fs, ft):
    return float(((standardize_np(fs) - standardize_np(ft))**2).mean() / 2)


# ---------------------------------------------------------------------------
# Values against the references.


def test_kd_hand_computed_2x3():
    student = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    teacher = torch.tensor([[3.0, 2.0, 1.0], [0.0, 0.0, 0.0]])
    # Row 0: p_T = reverse(p_S) with p_S = softmax(1, 2, 3), so
    # KL = sum p_T (log p_T - log p_S) = (p_S[2] - p_S[0]) * 2, as
    # log p_T[0] - log p_S[0] = 2, ... = 0, ... = -2. Row 1: KL = 0.
    e = [math.exp(1), math.exp(2), math.exp(3)]
    p_s = [v / sum(e) for v in e]
    expected = (2 * (p_s[2] - p_s[0]) + 0.0) / 2
    assert KDLoss()(student, teacher).item() == pytest.approx(expected,
                                                              rel=1e-6)


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_kd_matches_reference(tau):
    student, teacher, _ = make_inputs('KDLoss', seed=1)
    value = KDLoss(tau=tau)(student, teacher)
    assert value.item() == pytest.approx(kd_ref(student, teacher, tau),
                                         rel=1e-5)


def test_kd_dense_logits_average_over_positions():
    gen = torch.Generator().manual_seed(2)
    student = torch.randn(2, 5, 3, 2, generator=gen)
    teacher = torch.randn(2, 5, 3, 2, generator=gen)
    per_position = [
        kd_ref(student[:, :, h, w], teacher[:, :, h, w], 2.0)
        for h in range(3) for w in range(2)
    ]
    value = KDLoss(tau=2.0)(student, teacher)
    assert value.item() == pytest.approx(np.mean(per_position), rel=1e-5)


@pytest.mark.parametrize('alpha,beta,tau', [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_matches_reference(alpha, beta, tau):
    student, teacher, labels = make_inputs('DKDLoss', seed=3)
    loss = DKDLoss(alpha=alpha, beta=beta, tau=tau)
    expected = dkd_ref(student, teacher, labels.tolist(), alpha, beta, tau)
    assert loss(student, teacher, labels).item() == pytest.approx(expected,
                                                                  rel=1e-5)


def test_dkd_terms_separately():
    student, teacher, labels = make_inputs('DKDLoss', seed=4)
    tckd_only = DKDLoss(alpha=1.0, beta=0.0, tau=2.0)(student, teacher, labels)
    nckd_only = DKDLoss(alpha=0.0, beta=1.0, tau=2.0)(student, teacher, labels)
    assert tckd_only.item() == pytest.approx(
        dkd_ref(student, teacher, labels.tolist(), 1.0, 0.0, 2.0), rel=1e-5)
    assert nckd_only.item() == pytest.approx(
        dkd_ref(student, teacher, labels.tolist(), 0.0, 1.0, 2.0), rel=1e-5)


def test_dkd_accepts_labels_as_list_and_other_int_dtypes():
    student, teacher, labels = make_inputs('DKDLoss', seed=5)
    loss = DKDLoss()
    ref = loss(student, teacher, labels)
    for other in (labels.tolist(), labels.int(), labels.to(torch.uint8)):
        assert torch.equal(loss(student, teacher, other), ref)


def test_dkd_without_labels_raises():
    student, teacher, _ = make_inputs('DKDLoss')
    with pytest.raises(ValueError, match='labels'):
        DKDLoss()(student, teacher)


def test_dkd_rejects_float_labels_and_wrong_count():
    student, teacher, labels = make_inputs('DKDLoss')
    with pytest.raises(ValueError, match='integer'):
        DKDLoss()(student, teacher, labels.float())
    with pytest.raises(ValueError, match='labels'):
        DKDLoss()(student, teacher, labels[:2])


def test_dkd_warmup():
    student, teacher, labels = make_inputs('DKDLoss', seed=6)
    full = DKDLoss()(student, teacher, labels).item()
    assert full > 0
    loss = DKDLoss(warmup_iters=10)
    # No set_iter call yet: iteration 0, factor 0.
    assert loss(student, teacher, labels).item() == 0.0
    loss.set_iter(0)
    assert loss(student, teacher, labels).item() == 0.0
    loss.set_iter(5)
    assert loss(student, teacher, labels).item() == pytest.approx(full / 2,
                                                                  rel=1e-6)
    for iteration in (10, 1000):
        loss.set_iter(iteration)
        assert loss(student, teacher, labels).item() == pytest.approx(
            full, rel=1e-6)


@pytest.mark.parametrize('beta,gamma,tau', [(2.0, 2.0, 1.0), (1.0, 3.0, 4.0)])
def test_dist_matches_reference(beta, gamma, tau):
    student, teacher, _ = make_inputs('DISTLoss', seed=7)
    student = 3 * student  # spread the probabilities away from uniform
    value = DISTLoss(beta=beta, gamma=gamma, tau=tau)(student, teacher)
    expected = dist_ref(student, teacher, beta, gamma, tau)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_dist_zero_for_logits_shifted_per_sample():
    # Softmax ignores a constant added to a sample's logits.
    _, teacher, _ = make_inputs('DISTLoss', seed=8)
    shifted = teacher + torch.arange(4.0).unsqueeze(1)
    assert DISTLoss()(shifted, teacher).item() == pytest.approx(0.0, abs=1e-5)


def test_pkd_matches_reference():
    student, teacher, _ = make_inputs('PKDLoss', seed=9)
    value = PKDLoss()(student, teacher)
    assert value.item() == pytest.approx(pkd_ref(student, teacher), rel=1e-5)


def test_pkd_is_invariant_to_channel_affine_maps():
    student, teacher, _ = make_inputs('PKDLoss', seed=10)
    scale = torch.tensor([0.5, 2.0, 3.0, 10.0]).view(1, 4, 1, 1)
    value = PKDLoss()(scale * teacher - 7.0, teacher)
    assert value.item() == pytest.approx(0.0, abs=1e-6)


def test_pkd_vectors_standardised_over_batch():
    gen = torch.Generator().manual_seed(11)
    student, teacher = torch.randn(6, 3, generator=gen), torch.randn(
        6, 3, generator=gen)
    expected = pkd_ref(student[:, :, None, None], teacher[:, :, None, None])
    assert PKDLoss()(student, teacher).item() == pytest.approx(expected,
                                                               rel=1e-5)


def test_pkd_gradient_matches_reference_and_single_values_give_zero():
    """The batch-norm standardisation gives the reference's gradient; a
    channel with one value (batch 1 of vectors) standardises to 0: zero
    loss, still on the graph."""
    student, teacher, _ = make_inputs('PKDLoss', seed=12)
    student = student.clone().requires_grad_()  # the loss computes in float32
    ours = torch.autograd.grad(PKDLoss()(student, teacher), student)[0]

    def reference(s, t):
        def std(x):
            flat = x.transpose(0, 1).reshape(x.shape[1], -1)
            z = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-6)
            return z.reshape(x.shape[1], x.shape[0], *x.shape[2:]).transpose(0, 1)
        return ((std(s) - std(t))**2).mean() / 2

    theirs = torch.autograd.grad(reference(student, teacher), student)[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7)
    one = torch.randn(1, 5, requires_grad=True)
    value = PKDLoss()(one, torch.randn(1, 5))
    assert value.item() == 0.0
    value.backward()
    assert one.grad is not None


def test_pkd_resizes_student_to_teacher():
    gen = torch.Generator().manual_seed(12)
    student = torch.randn(2, 4, 8, 8, generator=gen)
    teacher = torch.randn(2, 4, 4, 4, generator=gen)
    # Halving with bilinear, align_corners=False samples each output pixel
    # exactly between two input pixels per axis: a 2x2 average pooling.
    pooled = student.numpy().astype(np.float64).reshape(2, 4, 4, 2, 4, 2)
    pooled = pooled.mean(axis=(3, 5))
    value = PKDLoss()(student, teacher)
    assert value.item() == pytest.approx(pkd_ref(pooled, teacher), rel=1e-5)


def test_pkd_resize_teacher_when_asked():
    gen = torch.Generator().manual_seed(13)
    student = torch.randn(2, 4, 4, 4, generator=gen)
    teacher = torch.randn(2, 4, 8, 8, generator=gen)
    pooled = teacher.numpy().astype(np.float64).reshape(2, 4, 4, 2, 4, 2)
    pooled = pooled.mean(axis=(3, 5))
    value = PKDLoss(resize_student=False)(student, teacher)
    assert value.item() == pytest.approx(pkd_ref(student, pooled), rel=1e-5)


def test_mse_matches_reference():
    student = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, 1.0]])
    teacher = torch.tensor([[0.0, -1.0, 0.5], [1.0, 1.0, -1.0]])
    # Squared differences: 1, 1, 0, 4, 1, 4 -> mean 11 / 6.
    assert MSELoss()(student, teacher).item() == pytest.approx(11 / 6)


# ---------------------------------------------------------------------------
# Properties shared by every loss.


@pytest.mark.parametrize('name', ALL_LOSSES)
def test_zero_when_student_equals_teacher(name):
    _, teacher, labels = make_inputs(name, seed=14)
    loss = MODELS.build(dict(type=name))
    value = loss(teacher.clone(), teacher, labels)
    assert value.item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize('name', ALL_LOSSES)
def test_loss_weight_scales(name):
    student, teacher, labels = make_inputs(name, seed=15)
    base = MODELS.build(dict(type=name))(student, teacher, labels)
    scaled = MODELS.build(dict(type=name, loss_weight=2.5))(student, teacher,
                                                           labels)
    assert base.item() > 0
    assert scaled.item() == pytest.approx(2.5 * base.item(), rel=1e-6)


@pytest.mark.parametrize('name', ALL_LOSSES)
def test_gradient_reaches_student_only(name):
    student, teacher, labels = make_inputs(name, seed=16)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    MODELS.build(dict(type=name))(student, teacher, labels).backward()
    assert teacher.grad is None
    assert student.grad is not None
    assert student.grad.abs().sum().item() > 0


@pytest.mark.parametrize('name', ALL_LOSSES)
def test_bf16_inputs_give_finite_float32_scalar(name):
    student, teacher, labels = make_inputs(name, seed=17, dtype=torch.bfloat16)
    value = MODELS.build(dict(type=name))(student, teacher, labels)
    assert value.dtype == torch.float32
    assert value.dim() == 0
    assert torch.isfinite(value)


@pytest.mark.parametrize('name,student_shape,teacher_shape', [
    ('KDLoss', (8, 100), (8, 1000)),
    ('DKDLoss', (8, 100), (8, 1000)),
    ('DISTLoss', (8, 100), (8, 1000)),
    ('MSELoss', (8, 100), (8, 1000)),
    ('PKDLoss', (2, 4, 8, 8), (2, 6, 8, 8)),
    ('PKDLoss', (2, 4, 8, 8), (2, 6, 4, 4)),
])
def test_shape_mismatch_names_both_shapes(name, student_shape, teacher_shape):
    loss = MODELS.build(dict(type=name))
    labels = torch.zeros(8, dtype=torch.long)
    with pytest.raises(ValueError) as info:
        loss(torch.randn(student_shape), torch.randn(teacher_shape), labels)
    message = str(info.value)
    assert str(student_shape) in message
    assert str(teacher_shape) in message
    assert 'adapter' in message


# ---------------------------------------------------------------------------
# Registry.


@pytest.mark.parametrize('name', ALL_LOSSES)
def test_builds_in_fmkt_mm_scope(name):
    loss = MODELS.build(dict(type=name, loss_weight=0.5))
    assert type(loss).__name__ == name
    assert isinstance(loss, MetricLoss)
    assert loss.loss_weight == 0.5


@pytest.mark.parametrize('name', ALL_LOSSES)
def test_builds_with_scope_prefix_from_other_scopes(name):
    cfg = dict(type=f'fmkt_mm.{name}', loss_weight=0.5)
    with warnings.catch_warnings():
        # Importing '<scope>.registry' fails for these scopes; harmless.
        warnings.simplefilter('ignore')
        with DefaultScope.overwrite_default_scope('mmengine'):
            from_root = MMENGINE_MODELS.build(cfg)
        with DefaultScope.overwrite_default_scope(OTHER_SCOPE):
            from_other = OTHER_MODELS.build(cfg)
    for loss in (from_root, from_other):
        assert type(loss).__name__ == name
        assert loss.loss_weight == 0.5


def test_dkd_builds_with_arguments():
    loss = MODELS.build(
        dict(type='DKDLoss', alpha=2.0, beta=4.0, tau=3.0, warmup_iters=20))
    assert isinstance(loss, DKDLoss)
    assert (loss.alpha, loss.beta, loss.tau, loss.warmup_iters) == (2.0, 4.0,
                                                                    3.0, 20)
    assert isinstance(MODELS.build(dict(type='PKDLoss', resize_student=False)),
                      PKDLoss)


def test_set_iter_is_a_noop_by_default():
    loss = KDLoss()
    student, teacher, _ = make_inputs('KDLoss', seed=18)
    before = loss(student, teacher)
    loss.set_iter(123)
    assert torch.equal(loss(student, teacher), before)
