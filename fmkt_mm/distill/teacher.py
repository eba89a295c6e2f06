"""Building and loading the frozen teacher."""
import copy
from typing import Optional, Union

from mmengine.config import Config, ConfigDict
from mmengine.hub import get_config
from mmengine.registry import MODELS as ROOT_MODELS
from torch import nn

from ..checkpoint import load_weights


def model_config(config: Union[str, dict, Config], what: str):
    """``(model_cfg, default_scope, data_preprocessor)`` of a full config (a
    path, ``package::path`` or loaded Config) or of a bare model dict."""
    if isinstance(config, str):
        try:
            # 'mmdet::path' / 'mmpretrain::path': a config shipped inside a package
            config = get_config(config) if '::' in config else Config.fromfile(config)
        except FileNotFoundError as err:
            raise FileNotFoundError(f'{what} config not found: {config!r} ({err}). Give a local file '
                                    f"or 'mmdet::...' / 'mmpretrain::...' config path") from None
    config = copy.deepcopy(config)
    if 'model' in config and isinstance(config['model'], (dict, ConfigDict)):
        return dict(config['model']), config.get('default_scope'), config.get('data_preprocessor')
    if 'type' in config:
        return dict(config), None, None
    raise ValueError(f'{what} config must be a full config with a `model` field or a model dict '
                     f'with a `type`, got keys {sorted(config)}')


def build_model(model_cfg: dict, scope: Optional[str]) -> nn.Module:
    model_cfg = dict(model_cfg)
    if scope is not None:
        model_cfg.setdefault('_scope_', scope)
    return ROOT_MODELS.build(model_cfg)


def build_teacher(config: Union[str, dict], checkpoint: Optional[str], strict: bool = True,
                  allow_unsafe_pickle: bool = False, data_preprocessor=None,
                  allow_random_init: bool = False) -> nn.Module:
    """Build the teacher from its config and load its checkpoint, then freeze it.

    Loading is strict by default: a checkpoint that does not fit the config
    fails with the missing/unexpected/wrong-shape keys (``strict=False``
    loads what fits and warns). The file is read with ``weights_only=True``;
    ``allow_unsafe_pickle=True`` is the explicit opt-in for files that need
    full unpickling.
    """
    model_cfg, scope, top_level_preprocessor = model_config(config, 'teacher')
    model_cfg.setdefault('data_preprocessor', top_level_preprocessor or data_preprocessor)
    # the teacher's pretrained-backbone init is irrelevant: its checkpoint overrides it
    teacher = build_model(model_cfg, scope)
    if checkpoint is None:
        if not allow_random_init:
            raise ValueError('the teacher needs a checkpoint: set teacher=dict(config=..., '
                             'checkpoint=PATH) (a randomly initialised teacher teaches nothing)')
    else:
        load_weights(teacher, checkpoint, strict=strict, allow_unsafe_pickle=allow_unsafe_pickle,
                     what='teacher checkpoint')
    return freeze(teacher)


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model
