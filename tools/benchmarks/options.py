"""The command-line options the benchmark scripts have in common: the
parser, the output folder, ``--jobs``, ``--quick`` (and its sizes), the
task sizes and the rows of a study."""
import argparse
import os.path as osp
from typing import List, Optional, Sequence

from common import EFFICACY_DIR, INFERENCE_STEPS, Row


def parser(doc: str) -> argparse.ArgumentParser:
    """A script's parser, described by the first line of its docstring."""
    return argparse.ArgumentParser(description=doc.splitlines()[0])


def add_output(parser: argparse.ArgumentParser, work_dir: str, report: Optional[str] = None,
               quick: bool = True) -> None:
    """``--work-dir`` (where the runs, teachers and records go) and, with a
    ``report`` name, ``--out`` (the markdown report; its JSON beside it)."""
    parser.add_argument('--work-dir', default=work_dir,
                        help=f'folder of the runs, teachers and records (default: {work_dir}'
                             + ('; --quick: its quick/ subfolder)' if quick else ')'))
    if report:
        parser.add_argument('--out', default=None,
                            help=f'the markdown report (default: WORK_DIR/{report}); its JSON beside it '
                                 '(.json)')


def add_jobs(parser: argparse.ArgumentParser) -> None:
    """``--jobs``: trainings at a time."""
    parser.add_argument('--jobs', type=int, default=1,
                        help='runs in parallel, each in a fresh process with one torch thread')


def add_quick(parser: argparse.ArgumentParser) -> None:
    """``--quick``: a smoke run."""
    parser.add_argument('--quick', action='store_true', help='tiny sizes: checks the script runs')


def add_cls_sizes(parser: argparse.ArgumentParser) -> None:
    """The Fashion-MNIST runs: seeds, images, epochs, and the teachers'."""
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--train-samples', type=int, default=5000)
    parser.add_argument('--test-samples', type=int, default=None, help='default: all 10,000')
    parser.add_argument('--epochs', type=int, default=4)
    parser.add_argument('--teacher-epochs', type=int, default=6)
    parser.add_argument('--teacher-samples', type=int, default=10000)


def add_det_sizes(parser: argparse.ArgumentParser, seeds: bool = True) -> None:
    """The composed-set detection runs: images, epochs, the teachers' and
    (``seeds``) the seeds."""
    parser.add_argument('--det-train', type=int, default=600, help='composed training images')
    parser.add_argument('--det-val', type=int, default=200, help='composed validation images')
    parser.add_argument('--det-teacher-epochs', type=int, default=10)
    parser.add_argument('--det-epochs', type=int, default=8)
    if seeds:
        parser.add_argument('--det-seeds', type=int, nargs='+', default=[0])


def add_det_steps(parser: argparse.ArgumentParser) -> None:
    """``--det-steps``: the step counts a detection flow in the inference path is scored at."""
    parser.add_argument('--det-steps', type=int, nargs='+', default=list(INFERENCE_STEPS),
                        help='inference step counts scored for the flow deploy mode (the last is the '
                             'table\'s mAP)')


#: ``--quick`` of the Fashion-MNIST and detection runs (what the arguments hold)
QUICK = dict(train_samples=64, teacher_samples=64, test_samples=64, epochs=1, teacher_epochs=1,
             det_train=16, det_val=8, det_teacher_epochs=1, det_epochs=1)


def shrink(args: argparse.Namespace) -> None:
    """``--quick``'s tiny sizes (:data:`QUICK`, the first seed) on the arguments the script has."""
    for name, value in QUICK.items():
        if hasattr(args, name):
            setattr(args, name, value)
    if hasattr(args, 'seeds'):
        args.seeds = args.seeds[:1]


def finish_output(args: argparse.Namespace, report: Optional[str] = None) -> None:
    """``--quick`` writes under ``WORK_DIR/quick``; ``--out`` defaults to
    ``WORK_DIR/<report>``."""
    if getattr(args, 'quick', False):
        args.work_dir = osp.join(args.work_dir, 'quick')
    if report and getattr(args, 'out', None) is None:
        args.out = osp.join(args.work_dir, report)


def add_study_rows(parser: argparse.ArgumentParser, flag: str, rows: Sequence[Row], always: str) -> None:
    """``flag`` (e.g. ``--rows``): the rows of a study to run, by exact name
    (``always``, the baseline, runs in any case)."""
    parser.add_argument(flag, nargs='+', metavar='NAME',
                        help=f'rows to run ({always} always), by exact name: '
                             + '; '.join(repr(r.name) for r in rows))


def study_rows(parser: argparse.ArgumentParser, args: argparse.Namespace, attr: str,
               rows: Sequence[Row]) -> List[Row]:
    """The rows a study runs: those named in ``args.<attr>``, the baseline
    always; with ``--quick`` the first row after the baseline unless named."""
    names = getattr(args, attr)
    if args.quick:
        shrink(args)
        names = names or [rows[1].name]
    return pick_rows(parser, rows, names, keep_first=True)


def pick_rows(parser: argparse.ArgumentParser, rows: Sequence[Row], names: Optional[Sequence[str]],
              keep_first: bool = False) -> List[Row]:
    """The ``rows`` named (all without names; the first, a baseline, always
    with ``keep_first``); an unknown name is a usage error listing the rows."""
    known = [r.name for r in rows]
    unknown = set(names or ()) - set(known)
    if unknown:
        parser.error(f'unknown rows {sorted(unknown)}; the rows are {known}')
    return [r for i, r in enumerate(rows) if not names or r.name in names or (keep_first and i == 0)]


def det_study_args(doc: str, rows: Sequence[Row], report: str,
                   argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line of a detection study over ``rows`` (the first, the
    baseline, always runs), its report named ``report``."""
    parser_ = parser(doc)
    add_det_sizes(parser_)
    add_study_rows(parser_, '--det-rows', rows, rows[0].name)
    parser_.add_argument('--paired-with', metavar='NAME',
                         help=f'the row every other is paired with, run in any case (default: {rows[0].name!r})')
    add_det_steps(parser_)
    add_jobs(parser_)
    add_output(parser_, EFFICACY_DIR, report)
    add_quick(parser_)
    args = parser_.parse_args(argv)
    if args.paired_with is not None:  # that row first: the tables pair every run with the first row's
        baseline = pick_rows(parser_, rows, [args.paired_with])
        rows = baseline + [r for r in rows if r.name != args.paired_with]
    args.det_rows = study_rows(parser_, args, 'det_rows', rows)
    finish_output(args, report)
    return args
