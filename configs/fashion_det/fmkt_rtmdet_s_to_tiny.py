# FM-KT with zero inference cost on RTMDet (the detection default's form):
# each neck level's flow (mlp, 4 rectified steps, PKD on every step) carries
# the student's level toward the teacher's; the raw student level is pulled
# toward the flow's detached ensemble (loss_theta) and toward the teacher's
# by PKD (loss_raw), each at half the CWD recipe's weight, so the student's
# levels get the same total distillation weight (1 per level) as the CWD and
# PKD baselines. The trained student is a plain RTMDet-tiny.
_base_ = ['./rtmdet_tiny_student.py']
distiller = dict(
    type='fmkt_mm.DetectionDistiller',
    teacher=dict(config='{{fileDirname}}/rtmdet_s_teacher.py',
                 checkpoint='work_dirs/fashion_det/rtmdet_s_teacher.pth'),
    student_tap='neck',
    teacher_tap='neck',
    levels=(0, 1, 2),
    level_weights=0.5,
    flow=dict(path='rectified', encoder=dict(type='mlp'), num_steps=4, loss=dict(type='fmkt_mm.PKDLoss')),
    raw_loss_weight=1.0,
    deploy_mode='student',
    dummy_input_shape=(3, 128, 128))
