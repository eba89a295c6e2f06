"""Multi-process launch that also works on CPU-only machines (gloo)."""
import os

import torch
import torch.distributed as dist
from mmengine.config import Config


def setup_launcher(cfg: Config, launcher: str) -> Config:
    """Set ``cfg.launcher``; without a GPU, start a gloo process group first.

    MMEngine's own initialisation calls ``torch.cuda.set_device`` and wraps
    DDP with ``device_ids=[local_rank]``, both of which fail without CUDA.
    When the group already exists the Runner skips its own initialisation, and
    ``device_ids=None`` makes DDP run on the CPU. ``find_unused_parameters``
    stays False: every trainable parameter is used in every iteration.
    """
    cfg.launcher = launcher
    if launcher == 'none':
        return cfg
    if not torch.cuda.is_available():
        if not dist.is_initialized():
            if launcher == 'slurm' and 'RANK' not in os.environ:
                os.environ['RANK'] = os.environ['SLURM_PROCID']
                os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
                os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
            dist.init_process_group(backend='gloo')
        cfg.env_cfg = dict(cfg.get('env_cfg', {}), dist_cfg=dict(backend='gloo'))
    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel'))
    wrapper.setdefault('find_unused_parameters', False)
    if not torch.cuda.is_available():
        wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    return cfg
