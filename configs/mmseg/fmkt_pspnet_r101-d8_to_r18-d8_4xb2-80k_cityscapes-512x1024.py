# FM-KT on Cityscapes: PSPNet R101-D8 (teacher, 79.76 mIoU) -> PSPNet R18-D8
# (student, 74.87 mIoU alone), mmseg's 80k schedule at 512x1024 on 4 GPUs x 2
# images. Published on this pair: CWD 75.54, CanKD 76.24.
#
# The teacher is mmseg's model-zoo checkpoint, by URL (downloaded once into the
# torch hub cache, checked against the hash prefix of its name). A flow carries
# the student's last backbone stage (512 channels, the decode head's input)
# toward the teacher's (2048 channels, through an adapter) in 4 steps, PKD on
# every step; deploy mode 'student': the trained student is a plain mmseg
# PSPNet R18 (tools/export_student.py).
_base_ = ['mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py']
runner_type = 'fmkt_mm.DistillRunner'  # the distiller is applied under every launcher
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
distiller = dict(
    type='fmkt_mm.SegmentationDistiller',
    teacher=dict(config='mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
                 checkpoint='https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/'
                            'pspnet_r101-d8_512x1024_80k_cityscapes/'
                            'pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth'),
    flow=dict(path='rectified', encoder=dict(type='mlp', hidden_ratio=1.0, num_blocks=1), num_steps=4,
              loss=dict(type='fmkt_mm.PKDLoss')),
    levels=(3, ),
    level_weights=5.0,
    student_tap='backbone',
    teacher_tap='backbone',
    adapter=dict(type='FeatureAdapter'),
    deploy_mode='student',
    dummy_input_shape=(3, 512, 1024))
