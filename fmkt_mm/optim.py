"""Mixed precision that also works on a CPU."""
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from torch import nn

from .config_types import is_type, type_name
from .registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """bf16 autocast on CPU (MMEngine's AmpOptimWrapper requires a GPU).

    bf16 keeps fp32's exponent range, so no loss scaling is needed; the flow
    and the metric losses compute in fp32 where it matters.
    """

    def __init__(self, *args: Any, dtype: str = 'bfloat16', **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cast_dtype = getattr(torch, dtype)

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield


def enable_amp(cfg: Config) -> Config:
    """``--amp``: fp16 with dynamic loss scaling on GPU, bf16 autocast on CPU."""
    wrapper = cfg.optim_wrapper
    if wrapper.get('type') is not None and not is_type(wrapper.type, OPTIM_WRAPPERS, OptimWrapper,
                                                       AmpOptimWrapper, CPUAmpOptimWrapper):
        raise ValueError(f'--amp is not supported with optim_wrapper type {type_name(wrapper.type)!r}')
    if torch.cuda.is_available():
        wrapper.type = 'AmpOptimWrapper'
        wrapper.setdefault('loss_scale', 'dynamic')
    else:
        wrapper.type = 'fmkt_mm.CPUAmpOptimWrapper'
        wrapper.pop('loss_scale', None)
    return cfg
