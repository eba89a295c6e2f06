"""The shipped ImageNet/CIFAR configs build a working distiller (teacher
checkpoints are stand-ins with the right keys: no weights ship here)."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import fmkt_mm  # noqa: F401
from fmkt_mm.apis import apply_distiller
from fmkt_mm.distill.teacher import build_model, model_config
from fmkt_mm.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'mmpretrain', '*.py')))


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_mmpretrain_config_builds(path, tmp_path):
    cfg = apply_distiller(Config.fromfile(path))
    model_cfg = cfg.model.to_dict()
    teacher = model_cfg.get('teacher')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        if teacher is not None:
            t_cfg, scope, preprocessor = model_config(teacher['config'], 'teacher')
            t_cfg.setdefault('data_preprocessor', preprocessor)
            checkpoint = tmp_path / 'teacher.pth'
            torch.save(build_model(t_cfg, scope).state_dict(), checkpoint)
            teacher['checkpoint'] = str(checkpoint)
        model_cfg['data_preprocessor'] = cfg.get('data_preprocessor')
        distiller = MODELS.build(model_cfg)
    distiller.eval()
    with torch.no_grad():
        logits = distiller(torch.zeros(1, *model_cfg['dummy_input_shape']), mode='tensor')
    assert logits.shape == (1, cfg.model.student.head.num_classes)
