"""Distillation from several teachers: separate flows and one shared,
teacher-conditioned flow, through the real Runner on tiny data."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner

import fmkt_mm  # noqa: F401
from fmkt_mm import experiment
from fmkt_mm.export import export_student
from fmkt_mm.flow import TeacherCondition
from tiny_runs import CLS_CONFIGS, plain_model

TWO = 'fmkt_2teachers_resnet18_w16-w8_to_resnet18_w4.py'
THETA_TWO = 'fmkt_theta_2teachers_resnet18_w16-w8_to_resnet18_w4.py'


def two_teacher_cfg(config, work_dir, checkpoints, max_epochs=1, **distiller):
    """A two-teacher Fashion-MNIST config on 8 training images (2 iterations per epoch)."""
    cfg = experiment.load(osp.join(CLS_CONFIGS, config))
    cfg.train_dataloader.batch_size = 4
    cfg.train_dataloader.dataset.num_samples = 8
    for loader in ('val_dataloader', 'test_dataloader'):
        cfg[loader].batch_size = 8
        cfg[loader].dataset.num_samples = 16
    cfg.train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=100)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.randomness = dict(seed=0, deterministic=True)
    cfg.distiller.update(distiller)
    experiment.set_teacher(cfg, checkpoints)
    return experiment.finalize(cfg, 'two', str(work_dir))


@pytest.fixture
def checkpoints(teacher_checkpoint, teacher_w8_checkpoint):
    return [teacher_checkpoint, teacher_w8_checkpoint]


def build(checkpoints, tmp_path, config=TWO, **distiller):
    return Runner.from_cfg(two_teacher_cfg(config, tmp_path, checkpoints, **distiller)).model


def perturb_flows(model, seed=0):
    """Random meta-encoders and conditions (an untrained flow is the
    identity, the same for every teacher)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for flow in model.flows:
            for name, p in flow.named_parameters():
                if not name.startswith('head.'):
                    p.add_(0.1 * torch.randn(p.shape, generator=gen))


@pytest.mark.slow
@pytest.mark.parametrize('config,mode', [(TWO, 'separate'), (THETA_TWO, 'shared')])
def test_two_teachers_train_resume_test_and_export(config, mode, checkpoints, tmp_path):
    runner = Runner.from_cfg(two_teacher_cfg(config, tmp_path, checkpoints, teacher_flows=mode))
    model = runner.model
    assert model.multi_teacher and len(model.teacher) == 2
    before = copy.deepcopy(model.teacher.state_dict())
    runner.train()
    logs = runner.message_hub.log_scalars
    assert {'train/loss_flow', 'train/flow_teacher0', 'train/flow_teacher1'} <= set(logs)
    for key, value in model.teacher.state_dict().items():  # both teachers frozen
        assert torch.equal(value, before[key]), key
    state = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)['state_dict']
    assert any(k.startswith('teacher.1.') for k in state)

    resume = two_teacher_cfg(config, tmp_path, checkpoints, max_epochs=2, teacher_flows=mode)
    resume.resume = True
    resumed = Runner.from_cfg(resume)
    resumed.train()
    assert resumed.iter == 4
    assert 0.0 <= resumed.test()['accuracy/top1'] <= 100.0

    out = tmp_path / 'student.pth'
    summary = export_student(osp.join(CLS_CONFIGS, config),
                             str(tmp_path / 'epoch_2.pth'), str(out))
    if model.deploy_mode == 'student':  # the exported student predicts as the distiller
        assert not summary['not_exported']
        plain = plain_model('student_resnet18_w4.py')
        plain.load_state_dict(torch.load(out, weights_only=True)['state_dict'])
        plain.eval()
        distiller = resumed.model.eval()
        x = torch.randn(3, 1, 28, 28)
        with torch.no_grad():
            assert torch.equal(plain(x, mode='tensor'), distiller(x, mode='tensor'))
    else:
        assert summary['not_exported']


@pytest.mark.slow
def test_test_tool_needs_no_teacher_files_and_the_hook_scores_each_teacher(checkpoints, tmp_path):
    """tools/test.py scores a two-teacher checkpoint after both teachers'
    files are gone (both load strictly from it); TeacherEvalHook evaluates
    each teacher before training."""
    import shutil
    import subprocess
    import sys

    from tiny_runs import ROOT
    copies = []
    for k, path in enumerate(checkpoints):
        copies.append(tmp_path / f'teacher{k}.pth')
        shutil.copy(path, copies[-1])
    cfg = two_teacher_cfg(THETA_TWO, tmp_path / 'train', [str(c) for c in copies])
    cfg.custom_hooks.append(dict(type='fmkt_mm.TeacherEvalHook', max_batches=1))
    runner = Runner.from_cfg(cfg)
    runner.train()
    info = runner.message_hub.runtime_info
    assert {'teacher0/accuracy/top1', 'teacher1/accuracy/top1'} <= set(info)
    config = tmp_path / 'config.py'
    cfg.custom_hooks = [h for h in cfg.custom_hooks if 'TeacherEval' not in h['type']]
    cfg.dump(str(config))
    for c in copies:
        c.unlink()
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), str(config),
                          str(tmp_path / 'train' / 'epoch_1.pth'), '--work-dir', str(tmp_path / 'test')],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'accuracy/top1' in out.stdout + out.stderr


def test_shared_flow_has_one_flow_plus_its_condition(checkpoints, teacher_checkpoint, tmp_path):
    separate = build(checkpoints, tmp_path / 'a', teacher_flows='separate')
    shared = build(checkpoints, tmp_path / 'b', teacher_flows='shared')
    three = build(checkpoints + [teacher_checkpoint], tmp_path / 'c', teacher_flows='shared',
                  teachers=[*two_teacher_cfg(TWO, tmp_path / 'd', checkpoints).model.teachers,
                            dict(config=osp.join(CLS_CONFIGS, 'teacher_resnet18_w16.py'),
                                 checkpoint=teacher_checkpoint)])

    def flow_params(model, exclude_head=True):
        return sum(p.numel() for flow in model.flows for name, p in flow.named_parameters()
                   if not (exclude_head and name.startswith('head.')))
    assert len(separate.flows) == 2 and len(shared.flows) == 1
    one_flow = flow_params(separate) // 2
    condition = shared.flows[0].condition
    teacher_embedding = [c for c in condition.modules() if isinstance(c, TeacherCondition)][0]
    encoder_context = sum(p.numel() for n, p in shared.flows[0].encoder.named_parameters()
                          if 'context' in n)
    assert encoder_context > 0
    assert flow_params(shared) == one_flow + teacher_embedding.embedding.weight.numel() + encoder_context
    # a third teacher adds one embedding row, nothing else
    assert flow_params(three) - flow_params(shared) == teacher_embedding.dim


def test_shared_flow_runs_each_teacher_as_if_alone(checkpoints, tmp_path):
    """Stacking the batch once per teacher does not mix teachers or samples."""
    model = build(checkpoints, tmp_path, teacher_flows='shared').eval()
    perturb_flows(model)
    flow = model.flows[0]
    feature = torch.randn(3, 16, 7, 7)
    outs = model.teacher_runs(feature, 4)
    for j, out in enumerate(outs):
        context = flow.make_context(feature, teacher=torch.full((3,), j))
        alone = flow.run(feature, 4, context)
        torch.testing.assert_close(out.steps, alone.steps)
        torch.testing.assert_close(out.state, alone.state)
    assert not torch.allclose(outs[0].steps, outs[1].steps)  # the teacher embedding matters


@pytest.mark.parametrize('mode', ['separate', 'shared'])
def test_deploy_teacher_mean_is_the_weighted_mean_of_the_teachers_flows(mode, checkpoints, tmp_path):
    teachers = two_teacher_cfg(TWO, tmp_path / 'w', checkpoints).model.teachers
    teachers[0]['weight'], teachers[1]['weight'] = 3.0, 1.0
    mean = build(checkpoints, tmp_path, teacher_flows=mode, teachers=teachers).eval()
    perturb_flows(mean)
    assert mean.teacher_weights() == [0.75, 0.25]
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        both = mean(x, mode='tensor')
        single = []
        for which in (0, 'resnet18_w8'):
            mean.deploy_teacher = mean._teacher_index(which)
            single.append(mean(x, mode='tensor'))
    torch.testing.assert_close(both, 0.75 * single[0] + 0.25 * single[1])
    assert not torch.allclose(single[0], single[1])


def test_flow_loss_weighs_each_teachers_flow_loss(checkpoints, tmp_path):
    teachers = two_teacher_cfg(TWO, tmp_path / 'w', checkpoints).model.teachers
    teachers[0]['weight'], teachers[1]['weight'] = 1.0, 3.0
    model = build(checkpoints, tmp_path, teachers=teachers).train()
    data = model.data_preprocessor(dict(inputs=[torch.rand(1, 28, 28) * 255 for _ in range(4)],
                                        data_samples=None), True)
    from mmpretrain.structures import DataSample
    samples = [DataSample().set_gt_label(k % 10) for k in range(4)]
    losses = model(data['inputs'], samples, mode='loss')
    expected = 0.25 * losses['flow_teacher0'] + 0.75 * losses['flow_teacher1']
    torch.testing.assert_close(losses['loss_flow'].detach(), expected)


def test_mismatched_class_count_names_the_teacher_and_the_fix(checkpoints, tmp_path):
    from mmengine.config import Config
    five = Config.fromfile(osp.join(CLS_CONFIGS, 'teacher_resnet18_w8.py'))
    five.model.head.num_classes = 5
    torch.save(plain_model('teacher_resnet18_w8.py', num_classes=5).state_dict(), tmp_path / 't5.pth')
    teachers = [dict(config=osp.join(CLS_CONFIGS, 'teacher_resnet18_w16.py'), checkpoint=checkpoints[0]),
                dict(config=five.to_dict(), checkpoint=str(tmp_path / 't5.pth'), name='five')]
    with pytest.raises(ValueError, match=r"teacher 1 \(five\).*\(2, 5\).*num_classes"):
        build([checkpoints[0], str(tmp_path / 't5.pth')], tmp_path / 'run', teachers=teachers)


def test_unknown_tap_of_one_teacher_names_it_and_lists_the_paths(checkpoints, tmp_path):
    teachers = two_teacher_cfg(TWO, tmp_path / 'w', checkpoints).model.teachers
    teachers[1]['tap'] = 'head.fcc'
    with pytest.raises(ValueError, match=r"unknown module path 'head.fcc' in the teacher 1 "
                                         r"\(resnet18_w8\).*Closest: \['head.fc'"):
        build(checkpoints, tmp_path / 'run', teachers=teachers)


def test_teacher_and_teachers_together_are_refused(checkpoints, tmp_path):
    cfg = two_teacher_cfg(TWO, tmp_path, checkpoints)
    cfg.model.teacher = dict(cfg.model.teachers[0])
    with pytest.raises(ValueError, match='either teacher=dict'):
        Runner.from_cfg(cfg)


# -- detection: a RetinaNet and an FCOS teacher ------------------------------------------


@pytest.fixture(scope='module')
def det_teachers(tmp_path_factory):
    """``[(model config, checkpoint)]``: a tiny RetinaNet (32-channel FPN) and
    a tiny FCOS (64-channel FPN, so the student needs an adapter for it)."""
    pytest.importorskip('mmdet')
    from mmdet.utils import register_all_modules
    from mmengine.registry import MODELS, DefaultScope

    from tiny_runs import fcos, retinanet
    register_all_modules(init_default_scope=False)
    out = tmp_path_factory.mktemp('det_teachers')
    made = []
    for name, model in [('retinanet', retinanet(16, 32)), ('fcos', fcos(16, 64))]:
        torch.manual_seed(0)
        path = str(out / f'{name}.pth')
        with DefaultScope.overwrite_default_scope('mmdet'):
            torch.save(MODELS.build(model).state_dict(), path)
        made.append((name, model, path))
    return made


def det_distiller(det_teachers, **kwargs):
    from mmengine.registry import DefaultScope

    from fmkt_mm.distill import DetectionDistiller
    from tiny_runs import SIZE, retinanet
    kwargs.setdefault('dummy_input_shape', (3, SIZE, SIZE))
    kwargs.setdefault('adapter', dict(type='fmkt_mm.FeatureAdapter'))
    teachers = kwargs.pop('teachers', [dict(config=model, checkpoint=path, name=name)
                                       for name, model, path in det_teachers])
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DetectionDistiller(student=retinanet(8, 32), teachers=teachers, **kwargs)


@pytest.mark.parametrize('mode', ['separate', 'shared'])
@pytest.mark.parametrize('deploy_mode', ['flow', 'student'])
def test_detection_two_teachers_losses_weights_and_gradients(mode, deploy_mode, det_teachers):
    from tiny_runs import det_batch
    teachers = [dict(config=model, checkpoint=path, name=name, weight=w)
                for (name, model, path), w in zip(det_teachers, (1.0, 3.0))]
    model = det_distiller(det_teachers, teacher_flows=mode, deploy_mode=deploy_mode,
                          teachers=teachers, level_weights=2.0)
    model.init_weights()
    model.train()
    losses = model(**det_batch(model), mode='loss')
    for s in range(4):
        expected = 2.0 * (0.25 * losses[f'flow_l{s}_t0'] + 0.75 * losses[f'flow_l{s}_t1'])
        torch.testing.assert_close(losses[f'loss_flow_l{s}'].detach(), expected)
        assert (f'loss_theta_l{s}' in losses) == (deploy_mode == 'student')
    model.parse_losses(losses)[0].backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
    assert all(p.grad is None for p in model.teacher.parameters())
    # each teacher ran only up to its tap: no teacher head ran
    heads = []
    for teacher in model.teacher:
        teacher.bbox_head.register_forward_hook(lambda *a: heads.append(1))
    model(**det_batch(model), mode='loss')
    assert heads == []
    expected_flows = 4 if mode == 'shared' else 8
    assert len(model.flows) == expected_flows


def test_detection_shared_flows_have_one_set_of_flows_plus_the_condition(det_teachers):
    separate = det_distiller(det_teachers, teacher_flows='separate')
    shared = det_distiller(det_teachers, teacher_flows='shared')

    def flow_params(model):  # the flows without their adapters
        return sum(p.numel() for f in model.flows for n, p in f.named_parameters()
                   if not n.startswith('head.'))
    per_teacher = flow_params(separate) // 2
    extra = sum(p.numel() for f in shared.flows for n, p in f.named_parameters()
                if n.startswith('condition.') or 'context' in n)
    assert extra > 0 and flow_params(shared) == per_teacher + extra
    # the adapters are per teacher in both modes (the teachers' shapes differ)
    adapters = lambda m: sum(p.numel() for n, p in m.named_parameters() if 'adapter' in n)  # noqa: E731
    assert adapters(shared) == adapters(separate) > 0


@pytest.mark.parametrize('mode', ['separate', 'shared'])
def test_detection_deploy_teacher_mean_is_the_weighted_mean(mode, det_teachers):
    teachers = [dict(config=model, checkpoint=path, name=name, weight=w)
                for (name, model, path), w in zip(det_teachers, (1.0, 3.0))]
    model = det_distiller(det_teachers, teacher_flows=mode, teachers=teachers).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for flow in model.flows:
            for n, p in flow.named_parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
        level = torch.randn(2, 32, 8, 8)
        mean = model.deployed_ensemble(0, level, 3)
        single = []
        for j in (0, 1):
            model.deploy_teacher = j
            single.append(model.deployed_ensemble(0, level, 3))
    torch.testing.assert_close(mean, 0.25 * single[0] + 0.75 * single[1])
    assert not torch.allclose(single[0], single[1])


def test_detection_teacher_errors_name_the_teacher(det_teachers):
    teachers = [dict(config=model, checkpoint=path, name=name) for name, model, path in det_teachers]
    teachers[1]['tap'] = 'nek'
    with pytest.raises(ValueError, match=r"unknown module path 'nek' in the teacher 1 \(fcos\)"):
        det_distiller(det_teachers, teachers=teachers)
    teachers[1]['tap'] = 'neck'
    with pytest.raises(ValueError, match=r"shape .* teacher 1 \(fcos\)'s.*adapter=dict"):
        det_distiller(det_teachers, teachers=teachers, adapter=None)
    with pytest.raises(ValueError, match=r"teacher level 5,.* teacher 0 \(retinanet\)'s 'neck' 4"):
        det_distiller(det_teachers, teachers=teachers, levels=[(0, 5)])


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['separate', 'shared'])
def test_detection_two_teachers_train_resume_test_and_export(mode, det_teachers, coco_set, tmp_path):
    from mmengine.registry import DefaultScope

    from tiny_runs import retinanet, runner_config
    cfg_name = 'fmkt_retinanet-fcos_r18_to_r18w16_deploy-student.py'

    def cfg(max_iters):
        name, model, path = det_teachers[0]
        c = runner_config(cfg_name, str(tmp_path), coco_set, retinanet(8, 32), (model, path),
                          max_iters=max_iters, adapter=dict(type='fmkt_mm.FeatureAdapter'))
        c.model.teacher = None
        c.model.teachers = [dict(config=m, checkpoint=p, name=n) for n, m, p in det_teachers]
        c.model.teacher_flows = mode
        return c

    runner = Runner.from_cfg(cfg(2))
    runner.train()
    assert {'train/flow_l0_t0', 'train/flow_l0_t1'} <= set(runner.message_hub.log_scalars)
    resume = cfg(3)
    resume.resume = True
    resumed = Runner.from_cfg(resume)
    resumed.train()
    assert resumed.iter == 3
    assert 'coco/bbox_mAP' in resumed.test()

    with DefaultScope.overwrite_default_scope('mmdet'):
        out = tmp_path / 'student.pth'
        from fmkt_mm.export import export_student_from_cfg
        summary = export_student_from_cfg(resume, str(tmp_path / 'iter_3.pth'), str(out))
    assert not summary['not_exported']
    exported = torch.load(out, weights_only=True)['state_dict']
    student = resumed.model.student.state_dict()
    assert exported.keys() == student.keys()
    assert all(torch.equal(exported[k], student[k]) for k in student)
