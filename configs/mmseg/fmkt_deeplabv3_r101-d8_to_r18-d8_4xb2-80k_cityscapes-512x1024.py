# FM-KT on Cityscapes: DeepLabV3 R101-D8 (teacher, 80.2 mIoU in mmseg's zoo)
# -> DeepLabV3 R18-D8 (student, 76.70 mIoU alone), mmseg's 80k schedule at
# 512x1024. Published on this pair: CanKD 77.12. The recipe of the PSPNet
# config beside this one (a flow on the last backbone stage, deploy mode
# 'student'); the teacher by its model-zoo URL.
_base_ = ['mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py']
runner_type = 'fmkt_mm.DistillRunner'  # the distiller is applied under every launcher
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
distiller = dict(
    type='fmkt_mm.SegmentationDistiller',
    teacher=dict(config='mmseg::deeplabv3/deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024.py',
                 checkpoint='https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3/'
                            'deeplabv3_r101-d8_512x1024_80k_cityscapes/'
                            'deeplabv3_r101-d8_512x1024_80k_cityscapes_20200606_113503-9e428899.pth'),
    flow=dict(path='rectified', encoder=dict(type='mlp', hidden_ratio=1.0, num_blocks=1), num_steps=4,
              loss=dict(type='fmkt_mm.PKDLoss')),
    levels=(3, ),
    level_weights=5.0,
    student_tap='backbone',
    teacher_tap='backbone',
    adapter=dict(type='FeatureAdapter'),
    deploy_mode='student',
    dummy_input_shape=(3, 512, 1024))
