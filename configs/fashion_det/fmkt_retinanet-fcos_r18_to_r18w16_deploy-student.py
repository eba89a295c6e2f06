# FM-KT from two teachers of different families, a RetinaNet and an FCOS (both
# ResNet-18, 128-channel FPN), into the RetinaNet student: one flow per teacher
# and level, each matched to its teacher's level by PKD; the student's raw
# levels are pulled toward every teacher's detached ensemble (weighted), so the
# deployed model is the plain student. teacher_flows='shared' uses one flow per
# level conditioned on the teacher instead. FM-KT alone (raw_loss_weight=0.0),
# as the README's several-teacher table measured it.
_base_ = ['./fmkt_retinanet_r18_to_r18w16_deploy-student.py']
distiller = dict(
    teacher=None,
    teachers=[
        dict(config='{{fileDirname}}/retinanet_r18_teacher.py',
             checkpoint='work_dirs/fashion_det/retinanet_r18_teacher.pth', name='retinanet'),
        dict(config='{{fileDirname}}/fcos_r18_teacher.py',
             checkpoint='work_dirs/fashion_det/fcos_r18_teacher.pth', name='fcos'),
    ],
    teacher_flows='separate',
    raw_loss_weight=0.0)
