"""The vocabulary the benchmark scripts of this folder share: the
repository's root, the inference step counts, :class:`Row` (a table row: its
config and overrides) and :class:`Job` (one training run: a row at one seed,
teacher and size).

The rest lives by idea beside it: :mod:`pool` (running many, resumably),
:mod:`task_runs` (the runs of the demo tasks), :mod:`study_tables` (markdown
tables and the studies' verdicts), :mod:`options` (the command-line options
the scripts have in common), :mod:`reporting` (the report every script ends
with). The scripts import them as sibling modules (``import common``): run as
``python tools/benchmarks/<name>.py``, their folder is on the module path.
"""
import os.path as osp
import re
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

#: the repository
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


#: inference step counts at which a flow in the inference path is scored
INFERENCE_STEPS = (1, 2, 4, 8)


#: the efficacy, recipe and several-teacher scripts' folder: the teachers
#: trained there serve all of them
EFFICACY_DIR = osp.join('work_dirs', 'benchmark_efficacy')

Checkpoint = Union[None, str, List[str]]


@dataclass
class Row:
    """A row of a benchmark table: every seed and teacher runs it alike."""
    name: str
    config: str  # a file of the task's config folder
    flow: Optional[dict] = None  # overrides of ``distiller.flow``
    distiller: Optional[dict] = None  # overrides of the distiller (see :func:`override_distiller`)

    def job(self, seed: int, work_dir: str, **fields: Any) -> 'Job':
        """This row's :class:`Job` at ``seed``, written to ``work_dir``."""
        return Job(self.name, self.config, seed, work_dir, flow=self.flow, distiller=self.distiller, **fields)



@dataclass
class Job:
    """One training run."""
    row: str  # the table row it belongs to
    config: str  # a file of the task's config folder
    seed: int
    work_dir: str
    teacher: Optional[str] = None  # a study's teacher ('full', 'half'), recorded with the result
    teacher_checkpoint: Checkpoint = None  # one per teacher the config keeps
    flow: Optional[dict] = None  # overrides of ``distiller.flow``
    distiller: Optional[dict] = None  # overrides of the distiller (see :func:`override_distiller`)
    epochs: Optional[int] = None
    train_samples: Optional[int] = None  # Fashion-MNIST training images (None: the config's)
    test_samples: Optional[int] = None  # Fashion-MNIST test images (None: all 10,000)
    batch_size: Optional[int] = None  # Fashion-MNIST training batch (None: the config's)
    data_root: Optional[str] = None  # a composed set (detection, segmentation)
    test_steps: Tuple[int, ...] = INFERENCE_STEPS  # step counts a flow in the inference path is scored at
    threads: Optional[int] = 1  # torch threads of the run (None: torch's default)


def slug(name: str) -> str:
    """A row name as a folder name."""
    return re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')
