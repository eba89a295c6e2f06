"""Tests of fmkt_mm.DetectionDistiller on tiny RetinaNet and Faster R-CNN
pairs: unit checks of the neck hook, and short runs through MMEngine's Runner
on a 4-image COCO set composed from Fashion-MNIST (train, checkpoint, resume,
COCO test). The Runner tests are skipped, saying why, where Fashion-MNIST is
not installed."""
import copy
import glob
import math
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import fmkt_mm  # noqa: F401  (registers the distiller)
from fmkt_mm.apis import apply_distiller
from fmkt_mm.datasets import FASHION_DET_METAINFO
from fmkt_mm.datasets.idx import fashion_mnist_paths, fashion_mnist_root
from fmkt_mm.distill import DetectionDistiller
from fmkt_mm.export import export_student
from fmkt_mm.hooks import FlowStepsHook

mmdet = pytest.importorskip('mmdet')
from mmdet.utils import register_all_modules  # noqa: E402

from tiny_runs import DET_CONFIGS as CONFIGS  # noqa: E402
from tiny_runs import ROOT, SIZE, faster_rcnn, mask_rcnn, retinanet, runner_config  # noqa: E402
from tiny_runs import det_batch as batch  # noqa: E402

needs_data = pytest.mark.skipif(
    not all(osp.isfile(p) for split in ('train', 'test') for p in fashion_mnist_paths(split)),
    reason=f'Fashion-MNIST not found in {fashion_mnist_root()} (install Debian\'s '
    'dataset-fashion-mnist or set $FMKT_FASHION_MNIST_ROOT)')


register_all_modules(init_default_scope=False)


#: tiny models: one torch thread (conftest.one_thread)
ONE_THREAD = True


@pytest.fixture(autouse=True)
def mmdet_scope():
    """Unscoped model names (``RetinaNet``) resolve in mmdet, as under a
    Runner whose config says ``default_scope = 'mmdet'``."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


# -- tiny models ---------------------------------------------------------------------


@pytest.fixture(scope='module')
def teachers(tmp_path_factory):
    """Teacher model configs and plain state_dict checkpoints."""
    out = tmp_path_factory.mktemp('teachers')
    from mmengine.registry import MODELS
    made = {}
    for name, model in [('retinanet', retinanet(16, 32)), ('faster_rcnn', faster_rcnn(16, 32)),
                        ('retinanet_fpn64', retinanet(16, 64)), ('mask_rcnn', mask_rcnn(16, 32))]:
        torch.manual_seed(0)
        path = str(out / f'{name}.pth')
        with DefaultScope.overwrite_default_scope('mmdet'):  # module fixtures run before mmdet_scope
            torch.save(MODELS.build(model).state_dict(), path)
        made[name] = (model, path)
    return made


def distiller(student: dict, teacher, **kwargs) -> DetectionDistiller:
    model, path = teacher
    kwargs.setdefault('dummy_input_shape', (3, SIZE, SIZE))
    torch.manual_seed(0)
    return DetectionDistiller(student=student, teacher=dict(config=model, checkpoint=path), **kwargs)


def head_inputs(model):
    """Records the levels the student's bbox head reads (after the neck hook)."""
    seen = []
    return seen, model.student.bbox_head.register_forward_pre_hook(lambda m, args: seen.append(args[0]))


# -- the neck hook ---------------------------------------------------------------------


@pytest.mark.parametrize('deploy_mode', ['flow', 'student'])
@pytest.mark.parametrize('detector', ['retinanet', 'faster_rcnn'])
def test_losses_and_every_parameter_gets_a_gradient(teachers, detector, deploy_mode):
    build = retinanet if detector == 'retinanet' else faster_rcnn
    model = distiller(build(8, 32), teachers[detector], deploy_mode=deploy_mode,
                      level_weights=[10.0, 10.0, 6.0, 6.0])
    model.init_weights()
    model.train()
    losses = model(**batch(model), mode='loss')
    for level in range(4):
        assert f'loss_flow_l{level}' in losses
        assert losses[f'flow_l{level}_step'].shape == (4,)  # one logged value per step
        assert (f'loss_theta_l{level}' in losses) == (deploy_mode == 'student')
    task = {'retinanet': {'loss_cls', 'loss_bbox'},
            'faster_rcnn': {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'acc'}}[detector]
    assert task <= set(losses)  # mmdet's own names
    # the level weight multiplies the sum over steps
    steps = losses['flow_l2_step'].sum() / 4
    torch.testing.assert_close(losses['loss_flow_l2'].detach(), 6.0 * steps)

    loss, log_vars = model.parse_losses(losses)
    for level in range(4):  # logged under one name per step
        assert [k for k in log_vars if k.startswith(f'flow_l{level}_step')] == \
            [f'flow_l{level}_step{k}' for k in range(1, 5)]
    assert log_vars['flow_l2_step3'] == pytest.approx(float(losses['flow_l2_step'][2]))
    loss.backward()
    # DDP without find_unused_parameters: every trainable parameter is used
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(not p.requires_grad for p in model.teacher.parameters())


def test_recomputed_steps_train_faster_rcnn_exactly_as_kept_ones(teachers):
    """The shipped Faster R-CNN recipe checkpoints each meta-encoder call
    (``recompute='step'``): the same losses and gradients, bit for bit, as
    keeping every step's activations (deploy flow, an EMA of the flows)."""
    results = []
    for recompute in (False, 'step'):
        model = distiller(faster_rcnn(8, 32), teachers['faster_rcnn'], deploy_mode='flow', ema_momentum=0.0002,
                          flow=dict(encoder=dict(type='mlp', hidden_ratio=1.0, num_blocks=1), num_steps=4,
                                    loss=dict(type='fmkt_mm.PKDLoss'), recompute=recompute))
        model.init_weights()
        for flow in model.flows:  # moving flows: the estimates differ from the student's levels
            torch.nn.init.normal_(flow.encoder.output.weight, std=0.1)
        model.train()
        model.update_ema()  # what FlowEMAHook does before each training step
        torch.manual_seed(1)  # the RPN's and RoI head's samplers draw alike
        losses = model(**batch(model), mode='loss')
        loss, _ = model.parse_losses(losses)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (plain, plain_grads), (recomputed, recomputed_grads) = results
    assert torch.equal(plain, recomputed)
    assert plain_grads.keys() == recomputed_grads.keys()
    assert [n for n in plain_grads if not torch.equal(plain_grads[n], recomputed_grads[n])] == []


def test_untrained_flows_are_the_identity_and_trained_ones_feed_the_head(teachers):
    model = distiller(retinanet(8, 32), teachers['retinanet'], deploy_mode='flow', eval_steps=2)
    model.eval()
    data = batch(model, train=False)
    seen, handle = head_inputs(model)
    with torch.no_grad():
        model(**copy.deepcopy(data), mode='predict')
        plain = model.student.predict(*copy.deepcopy(list(data.values())))
    # zero-initialised output layers: zero velocity, the estimates are X_S
    for a, b in zip(seen[0], seen[1]):
        torch.testing.assert_close(a, b)
    torch.nn.init.normal_(model.flows[1].encoder.output.weight, std=0.1)
    seen.clear()
    with torch.no_grad():
        preds = model(**copy.deepcopy(data), mode='predict')
        model.student.predict(*copy.deepcopy(list(data.values())))
    handle.remove()
    assert torch.equal(seen[0][0], seen[1][0]) and not torch.allclose(seen[0][1], seen[1][1])
    assert type(preds[0]) is type(plain[0]) and 'bboxes' in preds[0].pred_instances


def test_extra_step_counts_predict_as_a_run_at_that_count(teachers):
    model = distiller(retinanet(8, 32), teachers['retinanet'], deploy_mode='flow', eval_steps=4)
    model.eval()
    for flow in model.flows:  # a flow that moves the features: counts give different boxes
        torch.nn.init.normal_(flow.encoder.output.weight, std=0.3)
    data = batch(model, train=False)
    model.set_eval_steps(4, [1, 2, 4])
    backbone_calls = []
    handle = model.student.backbone.register_forward_hook(lambda *args: backbone_calls.append(1))
    with torch.no_grad():
        preds = model(**copy.deepcopy(data), mode='predict')
    handle.remove()
    assert len(backbone_calls) == 3  # eval_steps, then 1 and 2: the student's own predict per count
    with torch.no_grad():
        alone = {}
        for n in (1, 4):
            model.set_eval_steps(n)
            alone[n] = model(**copy.deepcopy(data), mode='predict')
    assert model.steps_prediction_field == 'pred_instances'
    for pred, at1, at4 in zip(preds, alone[1], alone[4]):
        assert 'pred_instances_steps4' not in pred  # the main prediction is eval_steps'
        torch.testing.assert_close(pred.pred_instances.scores, at4.pred_instances.scores)
        torch.testing.assert_close(pred.pred_instances_steps1.scores, at1.pred_instances.scores)
        torch.testing.assert_close(pred.pred_instances_steps1.bboxes, at1.pred_instances.bboxes)
        assert not torch.equal(pred.pred_instances_steps1.scores, pred.pred_instances.scores)


def test_deploy_student_predicts_as_the_plain_detector(teachers):
    from mmengine.registry import MODELS
    student_cfg = retinanet(8, 32)
    model = distiller(student_cfg, teachers['retinanet'], deploy_mode='student')
    assert model.deploy_mode == 'student'
    model.train()
    loss, _ = model.parse_losses(model(**batch(model), mode='loss'))
    loss.backward()
    model.eval()
    plain = MODELS.build(student_cfg)
    plain.load_state_dict(model.student_state_dict(), strict=True)
    plain.eval()
    data = batch(model, train=False)
    with torch.no_grad():
        ours = model(**copy.deepcopy(data), mode='predict')
        theirs = plain.predict(*copy.deepcopy(list(data.values())))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.pred_instances.bboxes, b.pred_instances.bboxes)
        torch.testing.assert_close(a.pred_instances.scores, b.pred_instances.scores)


def test_ema_of_the_flows_is_used_for_inference(teachers):
    model = distiller(retinanet(8, 32), teachers['retinanet'], ema_momentum=0.5, ema_warmup=None,
                      levels=(0, 1))
    assert len(model.ema_flows) == 2 and not any(p.requires_grad for p in model.ema_flows.parameters())
    model.train()
    with torch.no_grad():
        model.flows[0].encoder.output.weight.fill_(1.0)
    before = [p.clone() for p in model.ema_flows.parameters()]
    with pytest.raises(RuntimeError, match="never updated.*FlowEMAHook"):
        model(**batch(model), mode='loss')  # nothing advanced the EMA: a silent stale EMA otherwise
    model.update_ema()  # what FlowEMAHook does before every training iteration
    model(**batch(model), mode='loss')
    torch.testing.assert_close(model.ema_flows[0].encoder.output.weight,
                               torch.full_like(model.flows[0].encoder.output.weight, 0.5))
    for old, ema, flow in zip(before, model.ema_flows.parameters(), model.flows.parameters()):
        torch.testing.assert_close(ema, 0.5 * old + 0.5 * flow)  # every parameter, in one update
    model.eval()
    assert model._inference_flows() is model.ema_flows
    model.train()
    assert model._inference_flows() is model.flows


def test_ema_momentum_warms_up_and_its_count_is_checkpointed(teachers):
    """The default warm-up: the first updates nearly copy the flows (a short
    run evaluates trained flows), later ones settle at ema_momentum; the
    update count is a buffer, so a resumed run continues the warm-up."""
    model = distiller(retinanet(8, 32), teachers['retinanet'], ema_momentum=0.0002, levels=(0, ))
    assert model.ema_warmup == 2000
    assert model.ema_momentum_at(1) > 0.999
    assert model.ema_momentum_at(2000) == pytest.approx(0.9998 * math.exp(-1) + 0.0002)
    assert model.ema_momentum_at(100000) == pytest.approx(0.0002, abs=1e-9)
    model.train()
    with torch.no_grad():
        model.flows[0].encoder.output.weight.fill_(1.0)
    model.update_ema()
    ema = model.ema_flows[0].encoder.output.weight
    torch.testing.assert_close(ema, torch.full_like(ema, model.ema_momentum_at(1)))
    assert int(model.state_dict()['ema_updates']) == 1
    with pytest.raises(ValueError, match='ema_warmup'):
        distiller(retinanet(8, 32), teachers['retinanet'], ema_momentum=0.0002, ema_warmup=0)


def test_heterogeneous_pair_gets_its_adapters_by_itself(teachers, monkeypatch):
    """adapter='auto' (the default) builds, for each level pair whose
    shapes differ, the FeatureAdapter a user would configure, and logs it;
    adapter=None refuses unequal shapes, naming both and the fix."""
    with pytest.raises(ValueError) as err:
        distiller(retinanet(8, 32), teachers['retinanet_fpn64'], adapter=None)
    message = str(err.value)
    assert '(1, 32, 8, 8)' in message and '(1, 64, 8, 8)' in message
    assert "adapter=dict(type='FeatureAdapter')" in message and "the default 'auto'" in message

    from fmkt_mm.distill import levels
    logged = []
    monkeypatch.setattr(levels, 'print_log', lambda message, **kwargs: logged.append(message))
    torch.manual_seed(0)
    auto = distiller(retinanet(8, 32), teachers['retinanet_fpn64'], deploy_mode='student')
    assert len(logged) == 4  # once per level pair
    assert logged[0].startswith('student level 0 (1, 32, 8, 8) -> teacher level 0 (1, 64, 8, 8): a FeatureAdapter')
    torch.manual_seed(0)
    model = distiller(retinanet(8, 32), teachers['retinanet_fpn64'],
                      adapter=dict(type='FeatureAdapter'), deploy_mode='student')
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in auto.state_dict().items())
    assert auto.state_dict().keys() == model.state_dict().keys()
    assert model.flows[0].channels == 32 and model.teacher_adapters[0].adapter.proj.out_channels == 64
    assert isinstance(model.flows[0].head, torch.nn.Identity)  # the distiller owns and applies the adapters
    model.train()
    loss, _ = model.parse_losses(model(**batch(model), mode='loss'))
    loss.backward()
    assert all(p.grad is not None for p in model.flows.parameters())


def test_checkpoints_with_adapters_saved_inside_the_flows_load(tmp_path):
    """A distiller saved while each separate flow held its teacher's adapter
    (``flows.{i}.head.*``; the EMA's copies ``ema_flows.{i}.head.*``), as
    written by fmkt_mm 0.1.0 up to commit 8347306 (two teachers, separate
    flows, adapters on both levels, an EMA; tests/data): it fits the
    distiller of today's layout, loads every tensor into its new place, and
    predicts what it predicted when saved. Resuming it is refused, naming the
    fix: its optimizer state lists the parameters in the old order."""
    from mmengine.registry import MODELS

    from fmkt_mm.checkpoint import CheckpointMismatchError
    from fmkt_mm.state_fit import check_fit, refuse_older_layout
    saved = torch.load(osp.join(ROOT, 'tests', 'data', 'level_distiller_adapters_in_flows.pth'),
                       weights_only=True)
    teachers = []
    for j, fpn in enumerate((16, 24)):  # the teachers' weights are not in the file (nor needed to predict)
        model = retinanet(8, fpn)
        torch.manual_seed(j)
        torch.save(MODELS.build(model).state_dict(), tmp_path / f't{j}.pth')
        teachers.append(dict(config=model, checkpoint=str(tmp_path / f't{j}.pth')))
    model = DetectionDistiller(student=retinanet(4, 8), teachers=teachers, levels=(0, 1), ema_momentum=0.5,
                               flow=dict(encoder=dict(type='mlp'), num_steps=2), dummy_input_shape=(3, SIZE, SIZE))
    state = dict(saved['state_dict'])
    assert check_fit(model, state, what='legacy') == []
    incompatible = model.load_state_dict(dict(state), strict=False)
    assert incompatible.unexpected_keys == [] and all(k.startswith('teacher.') for k in incompatible.missing_keys)
    for i in range(4):  # teacher-major: teacher j's level pair k at j * 2 + k
        assert torch.equal(model.teacher_adapters[i].adapter.proj.weight, state[f'flows.{i}.head.adapter.proj.weight'])
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()
               if k in state and not k.startswith('teacher_adapters.'))
    model.eval()
    with torch.no_grad():
        outputs = model(**batch(model, seed=3, train=False), mode='tensor')
    for now, then in zip(outputs, saved['outputs']):
        for x, y in zip(now, then):  # the weights are equal bit for bit; kernels may sum in another order
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointMismatchError, match='optimizer state follows the old parameter order') as err:
        refuse_older_layout(model, state, 'iter_2.pth')
    assert "load_from='iter_2.pth' and resume=False" in str(err.value)
    refuse_older_layout(model, model.state_dict(), 'iter_3.pth')  # today's layout resumes


@pytest.mark.parametrize('deploy_mode', ['flow', 'student'])
def test_raw_loss_is_the_pkd_baselines_term_on_top_of_the_flows(teachers, deploy_mode):
    """FM-KT plus PKD on the raw levels: ``loss_raw_l{l}`` equals the PKD
    baseline's ``loss_feat_l{l}`` on the same student, teacher and batch
    (times ``raw_loss_weight``), whatever the heads read."""
    from fmkt_mm.distill import FeatureDistiller
    model = distiller(retinanet(8, 32), teachers['retinanet'], deploy_mode=deploy_mode,
                      level_weights=[10.0, 10.0, 6.0, 6.0], raw_loss_weight=0.5)
    model.train()
    data = batch(model)
    losses = model(**data, mode='loss')
    model, path = teachers['retinanet']
    pkd = FeatureDistiller(student=retinanet(8, 32), teacher=dict(config=model, checkpoint=path),
                           loss=dict(type='fmkt_mm.PKDLoss'), level_weights=[10.0, 10.0, 6.0, 6.0],
                           dummy_input_shape=(3, SIZE, SIZE))
    fmkt = distiller(retinanet(8, 32), teachers['retinanet'], deploy_mode=deploy_mode,
                     level_weights=[10.0, 10.0, 6.0, 6.0], raw_loss_weight=0.5)
    pkd.student.load_state_dict(fmkt.student.state_dict())
    pkd.train()
    reference = pkd(**data, mode='loss')
    for level in range(4):
        torch.testing.assert_close(losses[f'loss_raw_l{level}'], 0.5 * reference[f'loss_feat_l{level}'])
    fmkt.train()
    loss, _ = fmkt.parse_losses(fmkt(**data, mode='loss'))
    loss.backward()  # the raw term reaches the student's neck
    assert all(p.grad is not None for p in fmkt.student.neck.parameters())
    assert 'loss_raw_l0' not in distiller(retinanet(8, 32), teachers['retinanet'])(**data, mode='loss')
    with pytest.raises(ValueError, match='raw_loss_weight'):
        distiller(retinanet(8, 32), teachers['retinanet'], raw_loss_weight=-1.0)


@pytest.mark.parametrize('deploy_mode', ['flow', 'student'])
def test_raw_pairs_distil_a_level_without_a_flow(teachers, deploy_mode):
    """``levels.raw_pairs``: PKD alone on P2, flows on P3-P5 (the cheap
    Faster R-CNN recipe). P2's ``loss_raw_l0`` is the PKD baseline's
    ``loss_feat_l0`` times its weight, P2 has no flow and the heads read it
    as the student made it; the flows' levels and their initial weights are
    those of a distiller of P3-P5 alone."""
    from fmkt_mm.distill import FeatureDistiller
    common = dict(deploy_mode=deploy_mode, level_weights=6.0)
    model = distiller(faster_rcnn(8, 32), teachers['faster_rcnn'], levels=dict(pairs=(1, 2, 3), raw_pairs=(0, )),
                      **common)
    flows_alone = distiller(faster_rcnn(8, 32), teachers['faster_rcnn'], levels=(1, 2, 3), **common)
    assert len(model.flows) == 3 and model.raw_pairs == [(0, 0)] and model.raw_weights == [6.0]
    extra = set(model.state_dict()) - set(flows_alone.state_dict())
    assert extra == set()  # equal shapes: no adapter for P2
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in flows_alone.state_dict().items())
    model.train()
    data = batch(model)
    seen, handle = [], model.student.rpn_head.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        student_p2 = model.student.neck(model.student.backbone(data['inputs']))[0]
    losses = model(**data, mode='loss')
    handle.remove()
    assert torch.equal(seen[0][0], student_p2)  # P2 as the student made it
    assert 'loss_flow_l0' not in losses and 'loss_theta_l0' not in losses
    assert {f'loss_flow_l{s}' for s in (1, 2, 3)} <= set(losses)
    model_cfg, path = teachers['faster_rcnn']
    pkd = FeatureDistiller(student=faster_rcnn(8, 32), teacher=dict(config=model_cfg, checkpoint=path),
                           loss=dict(type='fmkt_mm.PKDLoss'), levels=(0, ), level_weights=6.0,
                           dummy_input_shape=(3, SIZE, SIZE))
    pkd.student.load_state_dict(model.student.state_dict())
    pkd.train()
    torch.manual_seed(0)
    torch.testing.assert_close(losses['loss_raw_l0'], pkd(**data, mode='loss')['loss_feat_l0'])
    loss, _ = model.parse_losses(losses)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_raw_pairs_adapters_weights_and_errors(teachers):
    """A raw pair of unequal shapes gets its own adapter (after the flows'
    adapters); raw weights default to the one level weight, need their own
    when the level weights are per level; a level named twice, or missing
    on a side, is refused with the fix."""
    model = distiller(retinanet(8, 32), teachers['retinanet_fpn64'], deploy_mode='student',
                      levels=dict(pairs=(1, 2), raw_pairs=(0, 3), raw_weights=[2.0, 3.0]))
    assert [type(a.adapter).__name__ for a in model.raw_adapters] == ['FeatureAdapter'] * 2
    assert len(model.teacher_adapters) == 2 and model.raw_weights == [2.0, 3.0]
    model.train()
    losses = model(**batch(model), mode='loss')
    assert {'loss_raw_l0', 'loss_raw_l3', 'loss_flow_l1', 'loss_flow_l2'} <= set(losses)
    loss, _ = model.parse_losses(losses)
    loss.backward()
    assert all(p.grad is not None for p in model.raw_adapters.parameters())
    flat = distiller(retinanet(8, 32), teachers['retinanet'], levels=(1, 2), raw_levels=(0, ),
                     raw_level_weights=4.0)
    assert flat.raw_pairs == [(0, 0)] and flat.raw_weights == [4.0]
    with pytest.raises(ValueError, match=r'levels.raw_weights'):
        distiller(retinanet(8, 32), teachers['retinanet'], levels=dict(pairs=(1, 2), raw_pairs=(0, )),
                  level_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match=r'student level\(s\) \[1\] are in both') as err:
        distiller(retinanet(8, 32), teachers['retinanet'], levels=dict(pairs=(1, 2), raw_pairs=(1, )))
    assert 'raw_loss_weight' in str(err.value)
    with pytest.raises(ValueError, match=r'levels.raw_pairs pairs student level 7'):
        distiller(retinanet(8, 32), teachers['retinanet'], levels=dict(pairs=(1, 2), raw_pairs=(7, )))
    with pytest.raises(ValueError, match='adapter=None asks for equal shapes'):
        distiller(retinanet(8, 32), teachers['retinanet_fpn64'], adapter=None,
                  levels=dict(pairs=(1, ), raw_pairs=(0, )))


def test_level_pairs_and_configuration_errors(teachers):
    # a 5-level student neck against the teacher's 4 levels, paired explicitly
    student = faster_rcnn(8, 32)
    model = distiller(student, teachers['retinanet'], levels=[(1, 0), (2, 1)])
    assert model.level_pairs == [(1, 0), (2, 1)]
    model.train()
    assert {'loss_flow_l1', 'loss_flow_l2'} <= set(model(**batch(model), mode='loss'))

    with pytest.raises(ValueError, match='outputs 5 levels'):
        distiller(student, teachers['retinanet'], levels=(4, ))
    with pytest.raises(ValueError, match='one per level'):
        distiller(retinanet(8, 32), teachers['retinanet'], level_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match='deploy_mode'):
        distiller(retinanet(8, 32), teachers['retinanet'], deploy_mode='teacher')
    with pytest.raises(ValueError) as err:
        distiller(retinanet(8, 32), teachers['retinanet'], student_tap='nek')
    assert "'nek'" in str(err.value) and 'neck' in str(err.value) and 'bbox_head' in str(err.value)
    with pytest.raises(ValueError) as err:
        distiller(retinanet(8, 32), teachers['retinanet'], teacher_tap='neck.fpn_convs.9')
    assert 'teacher' in str(err.value) and 'neck.fpn_convs' in str(err.value)


def test_coco_configs_parse():
    configs = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', 'mmdet', 'fmkt_*.py'))
                     if not re.search(r'fmkt_(rtmdet|yolox|dino|deformable)', p))  # test_modern_detectors.py
    assert len(configs) == 11  # three pairs of deploy modes, the conv-encoder recipes, two width options
    for path in configs:
        cfg = apply_distiller(Config.fromfile(path))
        assert cfg.model.type == 'fmkt_mm.DetectionDistiller'
        assert cfg.model.teacher.config.startswith('mmdet::')
        # mmdet's model-zoo file, by URL, its name carrying the hash prefix the download is checked against
        assert re.fullmatch(r'https://download\.openmmlab\.com/mmdetection/v2\.0/.+-[0-9a-f]{8}\.pth',
                            cfg.model.teacher.checkpoint), cfg.model.teacher.checkpoint
        encoder = cfg.model.flow.encoder.type
        assert encoder == ('conv' if path.endswith('_conv.py') else 'mlp'), path
        assert cfg.model.deploy_mode in path and cfg.model.levels == (0, 1, 2, 3)
        assert cfg.model.level_weights == (6.0 if 'faster-rcnn' in path else 10.0)
        assert cfg.model.student.type in ('RetinaNet', 'FasterRCNN')
        # P2's flows rerun each encoder call in backward (the same values, a lower peak)
        assert cfg.model.flow.get('recompute', False) == ('step' if 'faster-rcnn' in path else False), path
        # RetinaNet X101 -> R50: flows of width 64, levels batched (the paper's full-width recipe and
        # the conv encoder's in configs of their own)
        lean = ('fmkt_retinanet_x101' in path and not path.endswith(('_full-width.py', '_conv.py'))) or \
            path.endswith('_lean.py')
        assert (cfg.model.flow.get('width'), cfg.model.flow.get('batch_levels', False)) == \
            ((64, True) if lean else (None, False)), path
        # Faster R-CNN's lean flows: PKD's step losses from the estimates' factors (P2's N maps never formed)
        assert cfg.model.flow.get('factored', False) == path.endswith('_lean.py'), path
    for path in sorted(glob.glob(osp.join(CONFIGS, 'fmkt_*.py'))):
        cfg = apply_distiller(Config.fromfile(path))
        assert cfg.model.student.backbone.init_cfg is None  # nothing to download


# -- through MMEngine's Runner -------------------------------------------------------------


def teacher_head_calls(runner):
    teacher = runner.model.teacher
    calls = []
    for name in ('bbox_head', 'rpn_head', 'roi_head'):
        if getattr(teacher, name, None) is not None:
            getattr(teacher, name).register_forward_hook(lambda *args, n=name: calls.append(n))
    return calls


def count_loss_calls(runner):
    model, calls = runner.model, []
    original = model.loss

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    model.loss = counted
    return calls


@pytest.mark.slow
@needs_data
def test_runner_train_resume_test_deploy_flow(coco_set, teachers, tmp_path, capfd):
    work_dir = str(tmp_path / 'flow')
    cfg = runner_config('fmkt_retinanet_r18_to_r18w16_deploy-flow.py', work_dir, coco_set,
                        retinanet(8, 32), teachers['retinanet'], ema_momentum=0.1)
    runner = Runner.from_cfg(cfg)
    head_calls = teacher_head_calls(runner)
    teacher_before = {k: v.clone() for k, v in runner.model.teacher.state_dict().items()}
    runner.train()
    assert runner.iter == 2 and osp.isfile(osp.join(work_dir, 'iter_2.pth'))
    for key in ('loss_cls', 'loss_bbox', 'loss_flow_l0', 'loss_flow_l3', 'flow_l0_step4'):
        assert f'train/{key}' in runner.message_hub.log_scalars
    teacher_after = runner.model.teacher.state_dict()
    assert all(torch.equal(teacher_before[k], teacher_after[k]) for k in teacher_before)
    runner.register_hook(FlowStepsHook(test_steps=(1, 4)))
    metrics = runner.test()
    assert isinstance(metrics['coco/bbox_mAP'], float)
    assert head_calls == []  # the teacher's forward stopped at its neck
    # one pass scores each step count with its own copy of the COCO evaluator
    scalars = runner.message_hub.log_scalars
    assert isinstance(scalars['test/flow/coco/bbox_mAP_steps1'].current(), float)
    assert scalars['test/flow/coco/bbox_mAP_steps4'].current() == metrics['coco/bbox_mAP']
    # each COCO summary (pycocotools prints it) is announced with its step count
    log = capfd.readouterr().out
    labels = [log.index(f'the evaluation below scores the flow ensemble of N={n} steps')
              for n in (4, 1)]
    header = 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all'
    summaries = [i for i in range(len(log)) if log.startswith(header, i)]
    summaries = summaries[-2:]  # (the first: validation at the end of training)
    assert labels[0] < summaries[0] < labels[1] < summaries[1]

    cfg = runner_config('fmkt_retinanet_r18_to_r18w16_deploy-flow.py', work_dir, coco_set,
                        retinanet(8, 32), teachers['retinanet'], max_iters=3, ema_momentum=0.1)
    cfg.resume = True
    runner = Runner.from_cfg(cfg)
    calls = count_loss_calls(runner)
    runner.train()
    assert runner.iter == 3 and len(calls) == 1  # continued at iteration 2


@pytest.mark.slow
@needs_data
def test_runner_faster_rcnn_deploy_student(coco_set, teachers, tmp_path):
    work_dir = str(tmp_path / 'student')
    cfg = runner_config('fmkt_faster-rcnn_r18_to_r18w16_deploy-student.py', work_dir, coco_set,
                        faster_rcnn(8, 32), teachers['faster_rcnn'])
    runner = Runner.from_cfg(cfg)
    head_calls = teacher_head_calls(runner)
    runner.train()
    for key in ('loss_rpn_cls', 'loss_cls', 'loss_flow_l0', 'loss_theta_l0'):
        assert f'train/{key}' in runner.message_hub.log_scalars
    assert 'coco/bbox_mAP' in runner.test()
    assert head_calls == []
    # the deployed student is a plain Faster R-CNN
    from mmengine.registry import MODELS
    plain = MODELS.build(faster_rcnn(8, 32))
    plain.load_state_dict(runner.model.student_state_dict(), strict=True)


@needs_data
def test_runner_heterogeneous_pair_with_adapter(coco_set, teachers, tmp_path):
    cfg = runner_config('fmkt_retinanet_r18_to_r18w16-fpn64_deploy-student.py', str(tmp_path / 'het'),
                        coco_set, retinanet(8, 32), teachers['retinanet_fpn64'], max_iters=1)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 1 and 'train/loss_flow_l0' in runner.message_hub.log_scalars


@pytest.mark.slow
@needs_data
def test_export_round_trip_with_plain_mmdet(coco_set, teachers, tmp_path):
    """deploy_mode='student': the export writes the plain student's config
    beside the checkpoint; both load through mmdet's init_detector in a
    process that never imports fmkt_mm, the classes come from the
    checkpoint's dataset_meta, and inference_detector gives the distiller's
    boxes."""
    from mmdet.apis import inference_detector
    work_dir = str(tmp_path / 'train')
    student = retinanet(8, 32)
    cfg = runner_config('fmkt_retinanet_r18_to_r18w16_deploy-student.py', work_dir, coco_set,
                        student, teachers['retinanet'], max_iters=1)
    runner = Runner.from_cfg(cfg)
    runner.train()
    config = str(tmp_path / 'distill_config.py')
    cfg.dump(config)
    out = str(tmp_path / 'student.pth')
    summary = export_student(config, osp.join(work_dir, 'iter_1.pth'), out)
    assert summary['deploy_mode'] == 'student' and summary['not_exported'] is None
    student_config = str(tmp_path / 'student_config.py')
    assert summary['config'] == student_config and summary['config_needs_fmkt_mm'] == []
    assert 'fmkt_mm' not in open(student_config).read()
    classes = tuple(FASHION_DET_METAINFO['classes'])
    assert tuple(summary['dataset_meta']['classes']) == classes

    image = sorted(glob.glob(osp.join(coco_set, 'val', '*')))[0]
    model = runner.model.eval()
    model.cfg = Config.fromfile(student_config)  # inference_detector reads the test pipeline here
    expected = inference_detector(model, image).pred_instances
    torch.save(dict(bboxes=expected.bboxes, scores=expected.scores, labels=expected.labels),
               tmp_path / 'expected.pth')
    script = f'''
import sys, torch
from mmdet.apis import inference_detector, init_detector
model = init_detector({student_config!r}, {out!r}, device='cpu')
assert tuple(model.dataset_meta['classes']) == {classes!r}, model.dataset_meta
got = inference_detector(model, {image!r}).pred_instances
want = torch.load({str(tmp_path / 'expected.pth')!r}, weights_only=True)
assert 'fmkt_mm' not in sys.modules
assert len(got) == len(want['bboxes']) > 0
torch.testing.assert_close(got.bboxes, want['bboxes'], rtol=0, atol=1e-4)
torch.testing.assert_close(got.scores, want['scores'], rtol=0, atol=1e-6)
assert torch.equal(got.labels, want['labels'])
print('ROUND-TRIP-OK', len(got))
'''
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300)
    assert 'ROUND-TRIP-OK' in done.stdout, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize('deploy_mode', ['flow', 'student'])
def test_runner_mask_rcnn_scores_bbox_and_segm(deploy_mode, coco_set, teachers, tmp_path):
    """Mask R-CNN distils through the Runner in both deploy modes (the mask
    head reads the flows' levels in 'flow') and is scored by COCO bbox and
    segm mAP on the composed set's garment masks."""
    cfg = runner_config(f'fmkt_mask-rcnn_r18_to_r18w16_deploy-{deploy_mode}.py', str(tmp_path),
                        coco_set, mask_rcnn(8, 32), teachers['mask_rcnn'])
    runner = Runner.from_cfg(cfg)
    runner.train()
    logs = runner.message_hub.log_scalars
    assert {'train/loss_mask', 'train/loss_flow_l0'} <= set(logs)
    assert ('train/loss_theta_l0' in logs) == (deploy_mode == 'student')
    metrics = runner.test()
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ('coco/bbox_mAP', 'coco/segm_mAP'))


@pytest.mark.slow
def test_mask_rcnn_export_round_trip_with_plain_mmdet(coco_set, teachers, tmp_path):
    """deploy_mode='student': the exported Mask R-CNN loads in plain mmdet (no
    fmkt_mm imported) and gives the distiller's boxes and masks."""
    from mmdet.apis import inference_detector
    work_dir = str(tmp_path / 'train')
    cfg = runner_config('fmkt_mask-rcnn_r18_to_r18w16_deploy-student.py', work_dir, coco_set,
                        mask_rcnn(8, 32), teachers['mask_rcnn'], max_iters=1)
    runner = Runner.from_cfg(cfg)
    runner.train()
    config = str(tmp_path / 'distill_config.py')
    cfg.dump(config)
    out = str(tmp_path / 'student.pth')
    summary = export_student(config, osp.join(work_dir, 'iter_1.pth'), out)
    assert summary['deploy_mode'] == 'student' and summary['not_exported'] is None
    image = sorted(glob.glob(osp.join(coco_set, 'val', '*')))[0]
    model = runner.model.eval()
    model.cfg = Config.fromfile(summary['config'])
    expected = inference_detector(model, image).pred_instances
    assert len(expected) > 0 and expected.masks.shape[-2:] == (SIZE, SIZE)
    torch.save(dict(bboxes=expected.bboxes, masks=expected.masks, labels=expected.labels),
               tmp_path / 'expected.pth')
    script = f'''
import sys, torch
from mmdet.apis import inference_detector, init_detector
model = init_detector({summary['config']!r}, {out!r}, device='cpu')
got = inference_detector(model, {image!r}).pred_instances
want = torch.load({str(tmp_path / 'expected.pth')!r}, weights_only=True)
assert 'fmkt_mm' not in sys.modules
assert len(got) == len(want['bboxes']) > 0
torch.testing.assert_close(got.bboxes, want['bboxes'], rtol=0, atol=1e-4)
assert torch.equal(got.labels, want['labels'])
assert torch.equal(got.masks, want['masks'])
print('MASK-ROUND-TRIP-OK', len(got), int(got.masks.sum()))
'''
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300)
    assert 'MASK-ROUND-TRIP-OK' in done.stdout, done.stderr[-3000:]


@pytest.mark.slow
@needs_data
def test_detection_demo_quick_trains_teacher_student_and_both_modes(tmp_path):
    """tools/demo_detection.py --quick (the detection guide's demo at tiny
    sizes): composes the set, trains the teacher and saves it, then the
    student alone and FM-KT in both deploy modes, each scored with COCO mAP."""
    work_dir = tmp_path / 'work'
    done = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'demo_detection.py'), '--quick',
                           '--data-root', str(tmp_path / 'data'), '--work-dir', str(work_dir)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ('| teacher | retinanet_r18_teacher |', '| student alone |',
                '| FM-KT student | fmkt_retinanet_r18_to_r18w16_deploy-student | student |',
                '| FM-KT student | fmkt_retinanet_r18_to_r18w16_deploy-flow | flow |'):
        assert row in done.stdout
    # readable output: one progress line per model, MMEngine's logs in files
    trained = [line for line in done.stdout.splitlines() if 'trained in' in line]
    assert [line.split(':')[0] for line in trained] == ['teacher', 'student alone', 'FM-KT (student)',
                                                         'FM-KT (flow)']
    assert len(done.stdout.splitlines()) < 25 and 'Average Precision' not in done.stdout
    for name in ('retinanet_r18_teacher', 'fmkt_retinanet_r18_to_r18w16_deploy-flow'):
        assert 'Epoch(test)' in (work_dir / name / 'console.log').read_text()
    teacher = torch.load(work_dir / 'retinanet_r18_teacher.pth', weights_only=True)
    assert any(k.startswith('backbone.') for k in teacher)
    assert not list(work_dir.glob('.*.tmp'))  # the atomic save left no temporary file


# -- level-batched flows ---------------------------------------------------------------


LEVEL = dict(type='level')


@pytest.mark.parametrize('deploy_mode,condition,width', [
    ('flow', LEVEL, None), ('student', LEVEL, None), ('flow', [dict(type='pooled'), LEVEL], None),
    ('student', [dict(type='pooled'), LEVEL], None), ('flow', LEVEL, 4), ('student', LEVEL, 4)])
def test_batched_levels_equal_the_per_level_loop(teachers, deploy_mode, condition, width):
    """``flow.batch_levels``: one encoder call per step for all levels (the
    token-wise encoder on the levels' concatenated positions, each with its
    own level's context) gives the per-level loop's losses, gradients and
    predictions; also for flows of a reduced width (one shared reduction)."""
    flow = dict(num_steps=3, encoder=dict(type='mlp'), condition=condition, shared_encoder=True, width=width)
    models = [distiller(retinanet(8, 32), teachers['retinanet'], deploy_mode=deploy_mode,
                        flow=dict(flow, batch_levels=batched)) for batched in (False, True)]
    models[1].load_state_dict(models[0].state_dict())
    moving_twins(models)
    data = batch(models[0])
    results = []
    for model in models:
        calls = []
        handle = model.flows[0].encoder.register_forward_hook(lambda *args: calls.append(1))
        results.append((*train_step(model, data), len(calls)))
        handle.remove()
    (loop_losses, loop_grads, loop_calls), (batched_losses, batched_grads, batched_calls) = results
    assert (loop_calls, batched_calls) == (3 * 4, 3)  # N per level, N for all four levels
    assert set(loop_losses) == set(batched_losses)
    for key, value in loop_losses.items():
        torch.testing.assert_close(batched_losses[key], value, rtol=1e-4, atol=1e-6)
    assert_grads_close(loop_grads, batched_grads, rtol=1e-4)
    assert_same_predictions(models)


@pytest.mark.parametrize('deploy_mode', ['flow', 'student'])
def test_factored_lean_flows_train_and_predict_as_the_formed_ones(teachers, deploy_mode):
    """``flow.factored``: Faster R-CNN's lean flows (width, levels batched)
    with PKD's step losses computed from the estimates' factors give the
    losses, gradients and predictions of the formed estimates (float32
    rounding)."""
    flow = dict(num_steps=3, encoder=dict(type='mlp'), condition=dict(type='level'), shared_encoder=True,
                width=8, batch_levels=True, loss=dict(type='fmkt_mm.PKDLoss'))
    models = [distiller(faster_rcnn(8, 32), teachers['faster_rcnn'], deploy_mode=deploy_mode,
                        flow=dict(flow, factored=factored)) for factored in (False, True)]
    moving_twins(models)
    data = batch(models[0])
    (formed, formed_grads), (factored, factored_grads) = (train_step(model, data) for model in models)
    assert set(formed) == set(factored)
    for key in [k for k in formed if 'flow' in k or 'theta' in k]:
        torch.testing.assert_close(factored[key], formed[key], rtol=1e-4, atol=1e-6)
    assert_grads_close(formed_grads, factored_grads, rtol=1e-3)
    assert_same_predictions(models)


def moving_twins(models) -> None:
    """Flows that move the features (random output layers) in ``models[0]``,
    and its weights in ``models[1]``."""
    for name, p in models[0].flows.named_parameters():
        if name.endswith('output.weight'):
            torch.nn.init.normal_(p, std=0.3)
    models[1].load_state_dict(models[0].state_dict())


def train_step(model, data):
    """A training step's losses and the gradient of their total (the RPN's
    and RoI head's samplers seeded alike)."""
    model.train()
    torch.manual_seed(1)
    losses = model(**copy.deepcopy(data), mode='loss')
    total, _ = model.parse_losses(losses)
    return losses, torch.autograd.grad(total, [p for p in model.parameters() if p.requires_grad], allow_unused=True)


def assert_grads_close(expected, got, rtol: float) -> None:
    for a, b in zip(expected, got):  # float32 sums in another order: relative to each tensor
        assert (a is None) == (b is None)
        if a is not None:
            assert float((b - a).norm()) <= rtol * float(a.norm()) + 1e-7


def assert_same_predictions(models) -> None:
    test = batch(models[0], train=False)
    with torch.no_grad():
        for model in models:
            model.eval()
        first, second = (model(**copy.deepcopy(test), mode='tensor') for model in models)
    torch.testing.assert_close(second, first, rtol=1e-4, atol=1e-5)


def test_reduced_width_flows_on_the_levels(teachers):
    """``flow.width``: every level's flow runs in a reduced projection of
    its own (one per level unless the encoder is shared); a round-trip loss,
    which needs the flow's reverse, is refused when the distiller is built."""
    model = distiller(retinanet(8, 32), teachers['retinanet'], flow=dict(encoder=dict(type='mlp'), width=4))
    reductions = {id(flow.reduction) for flow in model.flows}
    assert len(reductions) == 4 and all(flow.encoder.channels == 4 for flow in model.flows)
    model.train()
    losses = model(**batch(model), mode='loss')
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total) and 'loss_flow_l0' in losses
    with pytest.raises(ValueError, match=r'round-trip loss \(roundtrip_loss_weight\).*width=4.*'
                                         r'drop flow.width or the round-trip loss'):
        distiller(retinanet(8, 32), teachers['retinanet'], flow=dict(width=4, roundtrip_loss_weight=0.1))


def test_batched_levels_need_one_token_wise_encoder(teachers):
    with pytest.raises(ValueError, match='batch_levels needs one token-wise meta-encoder.*shared_encoder=True'):
        distiller(retinanet(8, 32), teachers['retinanet'],
                  flow=dict(encoder=dict(type='mlp'), batch_levels=True))
    with pytest.raises(ValueError, match='batch_levels needs one token-wise.*ConvMetaEncoder'):
        distiller(retinanet(8, 32), teachers['retinanet'],
                  flow=dict(encoder=dict(type='conv'), shared_encoder=True, batch_levels=True))
