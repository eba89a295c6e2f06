"""The losses dict of a training step: MMEngine's parsing into the total
loss and the logged values (:func:`parse_loss_terms`), and the check that
stops a run on a NaN or infinite loss (:func:`check_finite`)."""
import functools
import math
import operator
from collections import OrderedDict
from typing import Dict, Tuple

import torch
import torch.distributed as torch_dist
from mmengine.logging import MessageHub
from mmengine.utils import is_list_of


class NonFiniteLossError(FloatingPointError):
    """A training loss is NaN or infinite; raised before the optimizer step."""


def parse_loss_terms(losses: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """MMEngine's ``BaseModel.parse_losses`` (each term's mean; the total is
    the sum of the terms whose name contains ``'loss'``), without operators
    that change nothing: a scalar term is its own mean, and the sum starts
    from the first term, not from 0."""
    log_vars = []
    for name, value in losses.items():
        if isinstance(value, torch.Tensor):
            log_vars.append((name, value if value.dim() == 0 else value.mean()))
        elif is_list_of(value, torch.Tensor):
            log_vars.append((name, sum(item.mean() for item in value)))
        else:
            raise TypeError(f'{name} is not a tensor or list of tensors')
    terms = [value for name, value in log_vars if 'loss' in name]
    loss = functools.reduce(operator.add, terms) if terms else 0
    return loss, OrderedDict([('loss', loss)] + log_vars)


def check_finite(log_vars: Dict[str, torch.Tensor]) -> None:
    """Raise :class:`NonFiniteLossError` if any value in ``log_vars`` (the
    total ``loss`` and every term) is NaN or infinite, on any rank."""
    names = [k for k, v in log_vars.items() if isinstance(v, torch.Tensor)]
    if not names:
        return
    with torch.no_grad():  # one check for all terms, not one per term
        values = [log_vars[k] for k in names]
        bad = (~torch.isfinite(torch.stack([v.float().mean() if v.dim() else v.float()
                                            for v in values]))).to(torch.float32)
    where = ''
    if torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
        device = values[0].device
        if torch_dist.get_backend() == 'nccl' and device.type != 'cuda':
            device = torch.device('cuda', torch.cuda.current_device())
        bad = bad.to(device)
        torch_dist.all_reduce(bad)  # every rank learns that one of them failed, and stops
        bad = bad.cpu()
        where = f'on {int(bad.max().item())} of {torch_dist.get_world_size()} ranks; '
    if not bool((bad > 0).any()):
        return
    iteration = MessageHub.get_current_instance().get_info('iter')
    at = 'at an unknown iteration' if iteration is None else \
        f'at iteration {int(iteration) + 1} (runner.iter = {int(iteration)})'
    terms = [k for k, b in zip(names, bad.tolist()) if b > 0 and k != 'loss'] or ['loss']
    own = ', '.join(f'{k} = {_fmt_value(log_vars[k])}' for k in names if k != 'loss')
    raise NonFiniteLossError(
        f'non-finite training loss {at}: {", ".join(terms)} ({where}this process: {own}). '
        f'Training stopped before the optimizer step, so the weights are those of the previous '
        f'iteration and the last checkpoint is intact. Lower the learning rate, clip gradients '
        f'(optim_wrapper.clip_grad), lower the weight of the named term, or check the data.')


def _fmt_value(value: torch.Tensor) -> str:
    v = float(value.detach().float().mean())
    return str(v) if not math.isfinite(v) else f'{v:.4g}'
