"""Writing the student of a distillation checkpoint as a plain model checkpoint."""
import os.path as osp
import warnings
from typing import Dict, Optional

from mmengine.config import Config
from mmengine.registry import DefaultScope

from .apis import apply_distiller
from .checkpoint import atomic_torch_save, extract_state_dict, safe_torch_load
from .distill.base import STUDENT_PREFIX
from .distill.teacher import build_model

__all__ = ['atomic_torch_save', 'deploy_mode_of', 'export_student', 'export_student_from_cfg',
           'FLOW_NOT_EXPORTED']

FLOW_NOT_EXPORTED = (
    'the flow (meta-encoder and its sampling loop) is part of this model\'s prediction and has no '
    'counterpart in a plain model: the exported student predicts from its raw features, not from '
    'the flow\'s ensemble. Use a zero-cost variant (fmkt_theta, ofmkt, or deploy_mode=\'student\') '
    'to export a student that predicts exactly as the distiller does.')


def deploy_mode_of(model_cfg: dict) -> str:
    """``'student'`` when the plain student is what the distiller predicts with."""
    if 'deploy_mode' in model_cfg:
        return model_cfg['deploy_mode']
    from .registry import MODELS
    fixed = getattr(MODELS.get(model_cfg.get('type', '')), 'deploy_mode', None)
    if isinstance(fixed, str):  # baselines always deploy the plain student
        return fixed
    return 'flow' if model_cfg.get('variant', 'fmkt') == 'fmkt' else 'student'


def export_student(config: str, checkpoint: str, out: str) -> Dict[str, object]:
    """Write the student's weights from a distillation ``checkpoint`` to
    ``out`` as ``{'state_dict': ..., 'meta': ...}``, checked by loading them
    strictly into the plain student built from the config.

    Returns a summary (number of tensors, deploy mode, and what could not be
    exported).
    """
    cfg = apply_distiller(Config.fromfile(config))
    summary = export_student_from_cfg(cfg, checkpoint, out, config_path=config)
    if summary['not_exported']:
        warnings.warn(summary['not_exported'])
    return summary


def export_student_from_cfg(cfg: Config, checkpoint: str, out: str,
                            config_path: Optional[str] = None) -> Dict[str, object]:
    """:func:`export_student` for a loaded config whose ``model`` is the
    distiller (as a Runner holds it); does not warn, the summary's
    ``not_exported`` says what a plain student cannot reproduce."""
    model_cfg = dict(cfg.model)
    if 'student' not in model_cfg:
        raise ValueError(f'{config_path or "the config"} has no distiller block: there is no '
                         f'student to export')
    state = extract_state_dict(safe_torch_load(checkpoint, what='distillation checkpoint'))
    student_state = {k[len(STUDENT_PREFIX):]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)}
    if not student_state:
        raise ValueError(f'{checkpoint} holds no student.* weights; is it a distillation checkpoint?')

    student_cfg = dict(model_cfg['student'])
    if cfg.get('data_preprocessor') is not None:
        student_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        plain = build_model(student_cfg, cfg.get('default_scope'))
    plain.load_state_dict(student_state, strict=True)  # fails loudly on any mismatch

    mode = deploy_mode_of(model_cfg)
    not_exported = FLOW_NOT_EXPORTED if mode == 'flow' else None
    meta = dict(source_checkpoint=osp.abspath(checkpoint), deploy_mode=mode)
    if config_path is not None:
        meta['config'] = osp.abspath(config_path)
    atomic_torch_save(dict(state_dict=plain.state_dict(), meta=meta), out)
    return dict(num_tensors=len(student_state), deploy_mode=mode, not_exported=not_exported, out=out)
