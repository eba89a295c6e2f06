# FM-KT for Faster R-CNN, the paper's setting: flows on the first four FPN
# levels (weight 6 as in the paper); the RPN and the RoI head read the
# flows' ensemble features. The teacher's RPN and RoI head never run.
# Teacher checkpoint: train faster-rcnn_r18_teacher.py
# (python tools/demo_detection.py --pair faster-rcnn writes it).
_base_ = ['./faster-rcnn_r18w16_student.py']
distiller = dict(
    type='fmkt_mm.DetectionDistiller',
    teacher=dict(config='{{fileDirname}}/faster-rcnn_r18_teacher.py',
                 checkpoint='work_dirs/fashion_det/faster-rcnn_r18_teacher.pth'),
    # a token-wise (1x1) meta-encoder keeps the CPU demo fast; the COCO configs
    # use the 3x3 'conv' encoder
    flow=dict(encoder=dict(type='mlp', hidden_ratio=1.0, num_blocks=1), num_steps=4,
              loss=dict(type='fmkt_mm.PKDLoss')),
    levels=(0, 1, 2, 3),
    level_weights=6.0,
    deploy_mode='flow')
