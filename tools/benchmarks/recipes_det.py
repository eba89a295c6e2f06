"""The detection recipe study: does an FM-KT recipe beat PKD beyond seed noise?

Every row of :data:`DET_STUDY_ROWS` x two RetinaNet R18 teachers trained by
this script on the composed set (``--det-teacher-epochs`` and half of them) x
``--det-seeds``; every run is paired with PKD's run (the first row) of the
same teacher and seed. Prints, per teacher, bbox mAP (mean ± std over seeds),
the paired difference to PKD, the seeds won, the mAP at each ``--det-steps``
of the rows whose flows predict and s / iter, then the paired 95 % t
intervals per teacher and pooled (:mod:`fmkt_mm.studies`); writes them to
``--out`` (default ``WORK_DIR/recipes_det.md``, its JSON beside it). Each
finished run is a line of ``WORK_DIR/study_det.jsonl``; a rerun of the same
command resumes::

    python tools/benchmarks/recipes_det.py --det-train 400 --det-val 200 --det-epochs 5 \\
        --det-teacher-epochs 10 --det-seeds 0 1 2 3 4 --jobs 2
    python tools/benchmarks/recipes_det.py --quick          # a smoke run (tiny sizes)

``--paired-with NAME`` pairs every row with another row than PKD (e.g. a
cheaper recipe with the recipe it would replace).
"""
import options
import task_runs
from common import Row

DET_STUDENT = 'fmkt_retinanet_r18_to_r18w16_deploy-student.py'
DET_FLOW = 'fmkt_retinanet_r18_to_r18w16_deploy-flow.py'
#: (the overrides are the distiller's); the first row (PKD) is the baseline
#: every other row is paired with, seed by seed and teacher by teacher
DET_STUDY_ROWS = [
    Row('PKD', 'pkd_retinanet_r18_to_r18w16.py'),
    Row('FM-KT deploy student', DET_STUDENT, distiller=dict(raw_loss_weight=0.0)),
    Row('FM-KT deploy student, VE path', DET_STUDENT, distiller=dict(flow=dict(path='ve'), raw_loss_weight=0.0)),
    Row('FM-KT deploy student + PKD on the raw levels (default)', DET_STUDENT, distiller=dict(raw_loss_weight=1.0)),
    Row('FM-KT deploy flow', DET_FLOW),
    Row('FM-KT deploy flow, EMA of the flows (0.01, warm-up 50)', DET_FLOW,
        distiller=dict(ema_momentum=0.01, ema_warmup=50)),
    # cheaper recipes: fewer serial steps (the per-level loop is launch-bound)
    Row('FM-KT deploy flow, N = 2', DET_FLOW, distiller=dict(flow=dict(num_steps=2))),
    Row('FM-KT deploy flow, N = 1', DET_FLOW, distiller=dict(flow=dict(num_steps=1))),
    Row('student alone', 'retinanet_r18w16_student.py'),  # what the teachers add at all
    # controls and baselines: the default's distillation weight on the raw levels (theta + raw
    # terms, 2 x 10 per level) given to PKD alone, and MGD
    Row('PKD at twice its weight (control)', 'pkd_retinanet_r18_to_r18w16.py', distiller=dict(level_weights=20.0)),
    Row('MGD', 'mgd_retinanet_r18_to_r18w16.py'),
    # the default with every level in one encoder call per step (shared mlp, level embedding)
    Row('FM-KT deploy student + PKD on the raw levels, level-batched', DET_STUDENT,
        distiller=dict(raw_loss_weight=1.0, flow=dict(shared_encoder=True, batch_levels=True,
                                                      condition=dict(type='level')))),
    # the default with each level's flow on a quarter of the FPN's 128 channels (flow.width)
    Row('FM-KT deploy student + PKD on the raw levels, flows of width 32', DET_STUDENT,
        distiller=dict(raw_loss_weight=1.0, flow=dict(width=32))),
    Row('FM-KT deploy student + PKD on the raw levels, flows of width 32, level-batched', DET_STUDENT,
        distiller=dict(raw_loss_weight=1.0, flow=dict(width=32, shared_encoder=True, batch_levels=True,
                                                      condition=dict(type='level')))),
    # the COCO configs' lean switches on the deploy-flow recipe (pair it with 'FM-KT deploy flow':
    # --paired-with)
    Row('FM-KT deploy flow, flows of width 32, level-batched', DET_FLOW,
        distiller=dict(flow=dict(width=32, shared_encoder=True, batch_levels=True, condition=dict(type='level')))),
]


def parse_args(argv=None):
    return options.det_study_args(__doc__, DET_STUDY_ROWS, 'recipes_det.md', argv)


def main(argv=None):
    return task_runs.det_study_report(__file__, argv, parse_args(argv), 'retinanet_r18_teacher.py', 'det',
                                      'Detection recipe study', 'RetinaNet R18')


if __name__ == '__main__':
    main()
