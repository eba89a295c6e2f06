"""The report every benchmark script ends with: the markdown tables and a
provenance line (date, machine, versions, the command line) at ``--out``,
the measurements as JSON beside them."""
import argparse
import json
import os
import os.path as osp
import platform
import shlex
import sys
import time
from typing import List, Optional, Sequence

from common import ROOT


def command_line(script: str, argv: Optional[Sequence[str]]) -> str:
    """How ``script`` (its ``__file__``) was called, from the repository."""
    name = osp.relpath(osp.abspath(script), ROOT)
    return shlex.join(['python', name] + list(sys.argv[1:] if argv is None else argv))


def provenance(script: str, argv: Optional[Sequence[str]]) -> dict:
    """Date, machine, torch and mmengine versions and the command line."""
    import mmengine
    import torch
    return dict(date=time.strftime('%Y-%m-%d'),
                machine=f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores',
                torch=torch.__version__, mmengine=mmengine.__version__, command=command_line(script, argv))


def write_report(out: str, text: str, data: Optional[dict] = None) -> None:
    """The markdown ``text`` at ``out`` (and printed) and, with ``data``,
    its JSON beside it (``.json`` for ``.md``)."""
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    with open(out, 'w') as f:
        f.write(text + '\n')
    if data is not None:
        with open(osp.splitext(out)[0] + '.json', 'w') as f:
            json.dump(data, f, indent=1)
    print('\n' + text, flush=True)


def finish(args: argparse.Namespace, out: dict, text: List[str], start: float) -> dict:
    """A script's report: ``text`` and a provenance line (``out`` from
    :func:`provenance`, given the minutes since ``start``) at ``--out``,
    ``out`` as its JSON."""
    out['minutes'] = (time.time() - start) / 60
    text = text + [f'{out["date"]}, {out["machine"]}, torch {out["torch"]}, total {out["minutes"]:.1f} min: '
                   f'`{out["command"]}`']
    write_report(args.out, '\n'.join(text), out)
    return out
