# FM-KT on ImageNet: ResNet-50 -> MobileNetV2 (the flow runs on MobileNetV2's 1280-channel map).
# Needs checkpoints/resnet50_8xb32_in1k.pth (mmpretrain's model-zoo ResNet-50).
_base_ = ['mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py']
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
distiller = dict(
    type='fmkt_mm.ClassificationDistiller',
    variant='fmkt',
    teacher=dict(config='mmpretrain::resnet/resnet50_8xb32_in1k.py',
                 checkpoint='checkpoints/resnet50_8xb32_in1k.pth'),
    flow=dict(path='rectified', encoder=dict(type='mlp'), num_steps=8,
              loss=dict(type='fmkt_mm.DISTLoss', beta=2.0, gamma=2.0, tau=1.0)),
    dummy_input_shape=(3, 224, 224))
custom_hooks = [dict(type='fmkt_mm.FlowStepsHook', val_steps=8, test_steps=(1, 2, 4, 8))]
