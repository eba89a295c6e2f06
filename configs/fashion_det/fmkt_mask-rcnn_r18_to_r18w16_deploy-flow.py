# FM-KT for Mask R-CNN: flows on the first four FPN levels (weight 6, as for
# Faster R-CNN); the RPN, the box head and the mask head all read the flows'
# ensemble features. The teacher's heads never run.
# Teacher checkpoint: train mask-rcnn_r18_teacher.py (tools/train.py).
_base_ = ['./mask-rcnn_r18w16_student.py']
distiller = dict(
    type='fmkt_mm.DetectionDistiller',
    teacher=dict(config='{{fileDirname}}/mask-rcnn_r18_teacher.py',
                 checkpoint='work_dirs/fashion_det/mask-rcnn_r18_teacher.pth'),
    flow=dict(encoder=dict(type='mlp', hidden_ratio=1.0, num_blocks=1), num_steps=4,
              loss=dict(type='fmkt_mm.PKDLoss')),
    levels=(0, 1, 2, 3),
    level_weights=6.0,
    deploy_mode='flow')
