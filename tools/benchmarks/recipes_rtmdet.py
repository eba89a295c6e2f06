"""The RTMDet study: FM-KT, CWD (the published RTMDet recipe) and PKD on a width-scaled RTMDet pair.

RTMDet-s teaching RTMDet-tiny (the published pair's widths, 96 -> 128
channels: every row's adapters are built by themselves) on the composed set,
every row at the same distillation weight on the student's levels (1 per
level, the CWD recipe's). Every row of :data:`RTMDET_ROWS` x two teachers
trained by this script (``--det-teacher-epochs`` and half of them) x
``--det-seeds``; every run is paired with CWD's run (the first row) of the
same teacher and seed. Prints, per teacher, bbox mAP (mean ± std over seeds),
the paired difference to CWD, the seeds won and s / iter, then the paired
95 % t intervals per teacher and pooled (:mod:`fmkt_mm.studies`); writes them
to ``--out`` (default ``WORK_DIR/recipes_rtmdet.md``, its JSON beside it).
Each finished run is a line of ``WORK_DIR/study_rtmdet.jsonl``; a rerun of
the same command resumes::

    python tools/benchmarks/recipes_rtmdet.py --det-train 300 --det-val 100 --det-epochs 8 \\
        --det-teacher-epochs 16 --det-seeds 0 1 2 --jobs 2
    python tools/benchmarks/recipes_rtmdet.py --quick          # a smoke run (tiny sizes)
"""
import options
import task_runs
from common import Row

FMKT = 'fmkt_rtmdet_s_to_tiny.py'
CWD = dict(type='fmkt_mm.CWDLoss', tau=1.0)
#: the first row (the published recipe, CWD) is the baseline every other row is paired with
RTMDET_ROWS = [
    Row('CWD (the published RTMDet recipe)', 'cwd_rtmdet_s_to_tiny.py'),
    Row('student alone', 'rtmdet_tiny_student.py'),
    Row('PKD', 'pkd_rtmdet_s_to_tiny.py'),
    Row('FM-KT deploy student + PKD on the raw levels (default)', FMKT),
    Row('FM-KT deploy student, CWD as the metric', FMKT,
        distiller=dict(flow=dict(loss=dict(_delete_=True, **CWD)), raw_loss=CWD, teacher_norm=True)),
]


def parse_args(argv=None):
    return options.det_study_args(__doc__, RTMDET_ROWS, 'recipes_rtmdet.md', argv)


def main(argv=None):
    return task_runs.det_study_report(__file__, argv, parse_args(argv), 'rtmdet_s_teacher.py', 'rtmdet',
                                      'RTMDet study', 'RTMDet-s', 'RTMDet-tiny')


if __name__ == '__main__':
    main()
