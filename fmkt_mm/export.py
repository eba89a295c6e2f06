"""Writing the student of a distillation checkpoint as a plain model checkpoint."""
import copy
import gzip
import os.path as osp
import warnings
from typing import Dict, List, Optional, Tuple

from mmengine.config import Config
from mmengine.registry import DefaultScope

from .checkpoint import atomic_torch_save, atomic_write, extract_state_dict, safe_torch_load
from .config_prep import DURABLE_CHECKPOINT_HOOK, apply_distiller
from .distill.teacher import build_model
from .state_fit import STUDENT_PREFIX
from .train_loop import RESUMABLE_LOOP

__all__ = ['atomic_torch_save', 'deploy_mode_of', 'export_student', 'export_student_from_cfg',
           'plain_student_config', 'FLOW_NOT_EXPORTED']

FLOW_NOT_EXPORTED = (
    'the flow (meta-encoder and its sampling loop) is part of this model\'s prediction and has no '
    'counterpart in a plain model: the exported student predicts from its raw features, not from '
    'the flow\'s ensemble. Use a zero-cost variant (fmkt_theta, ofmkt, or deploy_mode=\'student\') '
    'to export a student that predicts exactly as the distiller does.')


def deploy_mode_of(model_cfg: dict) -> str:
    """``'student'`` when the plain student is what the distiller built from
    ``model_cfg`` predicts with, ``'flow'`` when it runs the flow (the
    distiller class's own :meth:`~fmkt_mm.distill.BaseDistiller.deploy_mode_of`)."""
    from .distill import BaseDistiller
    from .registry import MODELS
    cls = MODELS.get(model_cfg.get('type', ''))
    if not (isinstance(cls, type) and issubclass(cls, BaseDistiller)):
        raise ValueError(f'{model_cfg.get("type")!r} is not an fmkt_mm distiller; a deploy mode '
                         f'belongs to a distillation config (apply_distiller)')
    return cls.deploy_mode_of(model_cfg)


def export_student(config: str, checkpoint: str, out: str, data_dir: Optional[str] = 'data/fashion_mnist',
                   allow_unsafe_pickle: bool = False) -> Dict[str, object]:
    """Write the student's weights from a distillation ``checkpoint`` to
    ``out`` as ``{'state_dict': ..., 'meta': ...}``, checked by loading them
    strictly into the plain student built from the config, and the plain
    student's config beside it (``student.pth`` -> ``student_config.py``).

    ``meta['dataset_meta']`` is the dataset's metainfo (class names, palette)
    as the training run saved it, so that mmdet's ``init_detector`` and
    mmpretrain's ``init_model`` label predictions with the right classes.

    A dataset of fmkt_mm's in the config (``FashionMNISTGz``) becomes its
    stock counterpart reading files unpacked into ``data_dir``
    (:func:`stock_fashion_mnist`), so the exported config needs no fmkt_mm;
    ``data_dir=None`` keeps it (the config then imports fmkt_mm).

    ``allow_unsafe_pickle`` reads ``checkpoint`` with full unpickling (for
    files you trust; ``--allow-unsafe-pickle`` of the tool).

    Returns a summary (number of tensors, deploy mode, the config written,
    what still needs fmkt_mm, and what could not be exported).
    """
    cfg = apply_distiller(Config.fromfile(config))
    summary = export_student_from_cfg(cfg, checkpoint, out, config_path=config, data_dir=data_dir,
                                      allow_unsafe_pickle=allow_unsafe_pickle)
    if summary['not_exported']:
        warnings.warn(summary['not_exported'])
    return summary


def export_student_from_cfg(cfg: Config, checkpoint: str, out: str, config_path: Optional[str] = None,
                            data_dir: Optional[str] = None, allow_unsafe_pickle: bool = False
                            ) -> Dict[str, object]:
    """:func:`export_student` for a loaded config whose ``model`` is the
    distiller (as a Runner holds it); does not warn, the summary's
    ``not_exported`` says what a plain student cannot reproduce."""
    model_cfg = dict(cfg.model)
    if 'student' not in model_cfg:
        raise ValueError(f'{config_path or "the config"} has no distiller block: there is no '
                         f'student to export')
    loaded = safe_torch_load(checkpoint, what='distillation checkpoint', role='export',
                             allow_unsafe_pickle=allow_unsafe_pickle)
    source_meta = (loaded.get('meta') or {}) if isinstance(loaded, dict) else {}
    state = extract_state_dict(loaded)
    student_state = {k[len(STUDENT_PREFIX):]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)}
    if not student_state:
        raise ValueError(f'{checkpoint} holds no student.* weights; is it a distillation checkpoint?')

    student_cfg = copy.deepcopy(dict(model_cfg['student']))  # building may edit it (Deformable DETR)
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
    dataset_meta = source_meta.get('dataset_meta') or _config_metainfo(cfg)
    if dataset_meta:
        meta['dataset_meta'] = dataset_meta
    plain_cfg, needs_fmkt_mm = plain_student_config(cfg, data_dir)
    config_out = osp.splitext(out)[0] + '_config.py'
    meta['student_config'] = osp.abspath(config_out)
    # the config first: a checkpoint on disk always has its config beside it
    atomic_write(config_out, plain_cfg.pretty_text.encode())
    atomic_torch_save(dict(state_dict=plain.state_dict(), meta=meta), out)
    return dict(num_tensors=len(student_state), deploy_mode=mode, not_exported=not_exported,
                out=out, config=config_out, dataset_meta=dataset_meta,
                config_needs_fmkt_mm=needs_fmkt_mm)


def _config_metainfo(cfg: Config) -> Optional[dict]:
    """The ``metainfo`` of the config's training (or test) dataset, if set."""
    for loader in ('train_dataloader', 'test_dataloader', 'val_dataloader'):
        dataset = (cfg.get(loader) or {}).get('dataset') or {}
        while 'dataset' in dataset and 'metainfo' not in dataset:  # wrappers (RepeatDataset, ...)
            dataset = dataset['dataset']
        if dataset.get('metainfo'):
            return copy.deepcopy(dict(dataset['metainfo']))
    return None


#: what fmkt_mm registers in other packages' registries, by bare name
_FOREIGN_TYPES = ('FashionMNISTGz', )


def _fmkt_mm_types(node, where: str = '') -> List[str]:
    """Where a config still names an fmkt_mm component (``type='fmkt_mm.X'``,
    or a bare name fmkt_mm registered in another package's registry)."""
    found = []
    if isinstance(node, dict):
        kind = node.get('type')
        if isinstance(kind, str) and (kind.startswith('fmkt_mm.') or kind.split('.')[-1] in _FOREIGN_TYPES):
            found.append(f"{where or 'the config'}: {node['type']}")
        for key, value in node.items():
            found += _fmkt_mm_types(value, f'{where}.{key}' if where else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found += _fmkt_mm_types(value, f'{where}[{i}]')
    return found


def stock_fashion_mnist(cfg: Config, data_dir: str) -> List[str]:
    """Replace fmkt_mm's ``FashionMNISTGz`` datasets of ``cfg`` by mmpretrain's
    own ``FashionMNIST`` reading unpacked copies of the same IDX files, which
    are written into ``data_dir`` once (a config that loads in plain
    mmpretrain). Returns the places replaced. A subset (``num_samples``) has
    no stock counterpart: the stock dataset reads the whole split."""
    from .datasets.idx import fashion_mnist_paths
    replaced = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = (cfg.get(loader) or {}).get('dataset')
        if not dataset or str(dataset.get('type', '')).split('.')[-1] != 'FashionMNISTGz':
            continue
        split = dataset.get('split') or ('test' if dataset.get('test_mode') else 'train')
        for packed in fashion_mnist_paths(split, dataset.get('data_root')):
            unpacked = osp.join(data_dir, osp.basename(packed)[:-len('.gz')])
            if not osp.isfile(unpacked):
                with gzip.open(packed, 'rb') as f:
                    atomic_write(unpacked, f.read())
        stock = dict(type='FashionMNIST', data_root=osp.abspath(data_dir), split=split,
                     test_mode=bool(dataset.get('test_mode', False)), download=False,
                     pipeline=dataset.get('pipeline', []))
        cfg[loader].dataset = stock
        replaced.append(f'{loader}.dataset: FashionMNISTGz -> FashionMNIST '
                        f'(data_root={stock["data_root"]}, the whole {split} split)')
    return replaced


def plain_student_config(cfg: Config, data_dir: Optional[str] = None) -> Tuple[Config, List[str]]:
    """The config of the plain student from a distillation config (as a
    Runner holds it, ``model`` = the distiller): ``model`` is the student,
    and the distillation-only parts are gone (the distiller, fmkt_mm's hooks
    and log processor, ``load_from``/``resume``), so it loads in plain
    mmdet/mmpretrain. Returns it with the places that still name fmkt_mm
    components (e.g. a dataset of fmkt_mm's); while there are any, the config
    keeps importing fmkt_mm."""
    plain = Config(copy.deepcopy(cfg.to_dict()))
    plain.model = plain.model['student']
    plain.pop('distiller', None)
    plain.custom_hooks = [dict(h, type='EMAHook') if h.get('type') == 'fmkt_mm.DistillEMAHook' else h
                          for h in plain.get('custom_hooks', [])]  # mmdet's EMA of the plain model
    plain.custom_hooks = [h for h in plain.custom_hooks if not str(h.get('type', '')).startswith('fmkt_mm.')]
    if str((plain.get('log_processor') or {}).get('type', '')).startswith('fmkt_mm.'):
        plain.log_processor['type'] = 'LogProcessor'
        plain.log_processor.pop('mean_pattern', None)
    checkpoint = (plain.get('default_hooks') or {}).get('checkpoint') or {}
    if (checkpoint.get('backend_args') or {}).get('backend') == 'atomic_local':
        checkpoint.pop('backend_args')  # fmkt_mm's atomic writes
    if checkpoint.get('type') == DURABLE_CHECKPOINT_HOOK:
        checkpoint['type'] = 'CheckpointHook'
    if str(plain.get('runner_type', '')).startswith('fmkt_mm.'):
        plain.pop('runner_type')
    if str((plain.get('train_cfg') or {}).get('type', '')) == RESUMABLE_LOOP:
        plain.train_cfg['type'] = 'EpochBasedTrainLoop'  # fmkt_mm's exact resume, MMEngine's loop
    plain.load_from, plain.resume = None, False
    for key in ('work_dir', 'launcher', 'allow_unsafe_pickle', 'allow_partial_load'):
        plain.pop(key, None)
    if data_dir is not None:
        stock_fashion_mnist(plain, data_dir)
    remaining = _fmkt_mm_types(plain.to_dict())
    imports = [m for m in (plain.get('custom_imports') or {}).get('imports', []) if m != 'fmkt_mm']
    if remaining:
        imports.append('fmkt_mm')
    if imports:
        plain.custom_imports = dict(imports=imports, allow_failed_imports=False)
    else:
        plain.pop('custom_imports', None)
    return plain, remaining
