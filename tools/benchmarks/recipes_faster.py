"""The Faster R-CNN level study: which FPN levels must FM-KT's flows cover?

The paper's Faster R-CNN recipe puts a flow on P2-P5; at COCO's resolution
P2 (stride 4) holds three quarters of the positions and most of the flows'
memory and time. This study measures what leaving it out costs in accuracy:
every row of :data:`FASTER_ROWS` x two Faster R-CNN R18 teachers trained by
this script (``--det-teacher-epochs`` and half of them) x ``--det-seeds`` on
the composed set, every run paired with the paper's recipe (the first row)
of the same teacher and seed. Every FM-KT row carries the same weight per
distilled level (6). Prints, per teacher, bbox mAP (mean ± std over seeds),
the paired difference, the seeds won and s / iter, then the paired 95 % t
intervals per teacher and pooled (:mod:`fmkt_mm.studies`); writes them to
``--out`` (default ``WORK_DIR/recipes_faster.md``, its JSON beside it). Each
finished run is a line of ``WORK_DIR/study_faster.jsonl``; a rerun of the
same command resumes::

    python tools/benchmarks/recipes_faster.py --det-train 300 --det-val 100 --det-epochs 5 \\
        --det-teacher-epochs 10 --det-seeds 0 1 2 --jobs 2
    python tools/benchmarks/recipes_faster.py --quick          # a smoke run (tiny sizes)
"""
import options
import task_runs
from common import Row

FMKT = 'fmkt_faster-rcnn_r18_to_r18w16_deploy-flow.py'
#: the first row (the paper's levels) is the baseline every other row is paired with
FASTER_ROWS = [
    Row('FM-KT deploy flow, P2-P5 (the paper\'s levels)', FMKT, distiller=dict(levels=(0, 1, 2, 3))),
    Row('FM-KT deploy flow, P3-P6', FMKT, distiller=dict(levels=(1, 2, 3, 4))),
    # the lean switches of the RetinaNet study: flows on a quarter of the FPN's 128 channels, one
    # shared encoder call per step for all levels (a level embedding)
    Row('FM-KT deploy flow, P2-P5, flows of width 32, level-batched', FMKT,
        distiller=dict(levels=(0, 1, 2, 3),
                       flow=dict(width=32, shared_encoder=True, batch_levels=True, condition=dict(type='level')))),
    Row('PKD on P2-P5', 'pkd_faster-rcnn_r18_to_r18w16.py'),
    # P2 distilled by PKD alone (its own price there), flows on P3-P5 (a quarter of the positions)
    Row('FM-KT deploy flow, PKD on P2, flows on P3-P5', FMKT,
        distiller=dict(levels=(1, 2, 3), raw_levels=(0, ))),
]


def parse_args(argv=None):
    return options.det_study_args(__doc__, FASTER_ROWS, 'recipes_faster.md', argv)


def main(argv=None):
    return task_runs.det_study_report(__file__, argv, parse_args(argv), 'faster-rcnn_r18_teacher.py', 'faster',
                                      'Faster R-CNN level study', 'Faster R-CNN R18', 'R18 of a quarter width')


if __name__ == '__main__':
    main()
