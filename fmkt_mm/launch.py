"""Multi-process launch that also works on CPU-only machines (gloo)."""
import gc
import os
import shutil
import subprocess
from typing import Mapping, Optional

import torch
import torch.distributed as dist
from mmengine.config import Config


def _first_slurm_host(node_list) -> str:
    if not node_list:
        return '127.0.0.1'
    if shutil.which('scontrol'):
        first = subprocess.run(['scontrol', 'show', 'hostnames', node_list], capture_output=True,
                               text=True).stdout.split()
        if first:
            return first[0]
    if '[' not in node_list:
        return node_list.split(',')[0]
    raise RuntimeError(f'cannot expand SLURM_NODELIST={node_list!r} without scontrol; set '
                       f'MASTER_ADDR to the first node')


def launcher_environment(launcher: str, environ: Optional[Mapping[str, str]] = None) -> dict:
    """``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT`` for ``init_process_group(init_method='env://')``, read
    from what the launcher sets: torchrun sets them itself; Slurm's ``srun``
    sets ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID`` /
    ``SLURM_NODELIST`` (the first node is the master, port 29500 unless
    ``MASTER_PORT`` is set); Open MPI's ``mpirun`` sets
    ``OMPI_COMM_WORLD_*`` (``MASTER_ADDR`` must be set by the user).
    Variables already set win."""
    env = dict(os.environ if environ is None else environ)
    out = {}
    if launcher == 'slurm':
        node_list = env.get('SLURM_NODELIST') or env.get('SLURM_JOB_NODELIST')
        out.update(RANK=env['SLURM_PROCID'], WORLD_SIZE=env['SLURM_NTASKS'],
                   LOCAL_RANK=env.get('SLURM_LOCALID', '0'), MASTER_PORT='29500')
        if 'MASTER_ADDR' not in env:
            out['MASTER_ADDR'] = _first_slurm_host(node_list)
    elif launcher == 'mpi':
        out.update(RANK=env['OMPI_COMM_WORLD_RANK'], WORLD_SIZE=env['OMPI_COMM_WORLD_SIZE'],
                   LOCAL_RANK=env.get('OMPI_COMM_WORLD_LOCAL_RANK', '0'), MASTER_PORT='29500')
        if 'MASTER_ADDR' not in env:
            raise RuntimeError('--launcher mpi needs MASTER_ADDR (the address of rank 0) in the '
                               'environment')
    elif launcher == 'pytorch':
        missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in env]
        if missing:
            raise RuntimeError(f'--launcher pytorch expects torchrun\'s environment, missing '
                               f'{missing}; start with tools/dist_train.sh or torchrun')
    else:
        raise ValueError(f'unknown launcher {launcher!r}')
    return {k: v for k, v in out.items() if k not in env}


def setup_launcher(cfg: Config, launcher: str) -> Config:
    """Set ``cfg.launcher``; without a GPU, start a gloo process group first.

    MMEngine's own initialisation calls ``torch.cuda.set_device`` and wraps
    DDP with ``device_ids=[local_rank]``, both of which fail without CUDA.
    When the group already exists the Runner skips its own initialisation, and
    ``device_ids=None`` makes DDP run on the CPU. With GPUs MMEngine
    initialises NCCL itself.

    ``find_unused_parameters`` stays False (every trainable parameter of a
    distiller is used in every iteration, also after distillation is
    switched off); a config may still set it, at the top level or in
    ``model_wrapper_cfg``. Buffers are not broadcast (MMEngine's default):
    each rank keeps its own BatchNorm statistics, rank 0's are saved.
    """
    cfg.launcher = launcher
    if launcher == 'none':
        return cfg
    if not torch.cuda.is_available():
        if not dist.is_initialized():
            os.environ.update(launcher_environment(launcher))
            dist.init_process_group(backend='gloo')
        cfg.env_cfg = dict(cfg.get('env_cfg', {}), dist_cfg=dict(backend='gloo'))
    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel'))
    wrapper.setdefault('find_unused_parameters', bool(cfg.get('find_unused_parameters', False)))
    wrapper.setdefault('broadcast_buffers', False)
    if not torch.cuda.is_available():
        wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    return cfg


def shutdown_process_group() -> None:
    """Wait for every rank, then destroy the process group, if there is one.

    Called by the tools after training or testing, once they have dropped
    their runner: a rank that exits while the others still finish their last
    collective, or a gloo group destroyed by the interpreter's teardown, can
    abort a process (``terminate called without an active exception``,
    SIGABRT) after the work is done.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()  # a dropped runner's DDP wrapper (a reference cycle) still holds the group
        dist.barrier()
        destroy_process_group()


def destroy_process_group() -> None:
    """Destroy the default process group, if one is initialised (the one
    place the package closes it), and free it while the interpreter is whole.

    A group kept alive by a reference cycle (MMEngine's Runner and its loops
    hold each other, the Runner holds the DDP wrapper, the wrapper the group)
    is otherwise freed by the collector during interpreter finalisation,
    where gloo's threads releasing tensors abort the finished process.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()
