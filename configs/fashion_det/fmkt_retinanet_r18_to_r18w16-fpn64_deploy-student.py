# A heterogeneous pair: 64-channel student FPN, 128-channel teacher FPN. Each
# step's estimate (student space, 64 channels) goes through a 1x1 conv
# adapter into the teacher's 128 channels (and its spatial size) before PKD.
_base_ = ['./retinanet_r18w16-fpn64_student.py']
distiller = dict(
    type='fmkt_mm.DetectionDistiller',
    teacher=dict(config='{{fileDirname}}/retinanet_r18_teacher.py',
                 checkpoint='work_dirs/fashion_det/retinanet_r18_teacher.pth'),
    # a token-wise (1x1) meta-encoder keeps the CPU demo fast; the COCO configs
    # use the 3x3 'conv' encoder
    flow=dict(encoder=dict(type='mlp', hidden_ratio=1.0, num_blocks=1), num_steps=4,
              loss=dict(type='fmkt_mm.PKDLoss')),
    levels=(0, 1, 2, 3),
    level_weights=10.0,
    adapter=dict(type='fmkt_mm.FeatureAdapter'),
    deploy_mode='student')
