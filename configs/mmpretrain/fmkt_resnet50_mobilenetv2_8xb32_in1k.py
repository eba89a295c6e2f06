# FM-KT on ImageNet: ResNet-50 -> MobileNetV2 (the flow runs on MobileNetV2's 1280-channel map).
# The teacher is mmpretrain's model-zoo ResNet-50, by URL.
_base_ = ['mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py']
runner_type = 'fmkt_mm.DistillRunner'  # the distiller is applied under every launcher (mim too)
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
distiller = dict(
    type='fmkt_mm.ClassificationDistiller',
    deploy_mode='flow',
    teacher=dict(config='mmpretrain::resnet/resnet50_8xb32_in1k.py',
                 checkpoint='https://download.openmmlab.com/mmclassification/v0/resnet/resnet50_8xb32_in1k_20210831-ea4938fc.pth'),
    flow=dict(path='rectified', encoder=dict(type='mlp'), num_steps=8,
              loss=dict(type='fmkt_mm.DISTLoss', beta=2.0, gamma=2.0, tau=1.0)),
    dummy_input_shape=(3, 224, 224))
custom_hooks = [dict(type='fmkt_mm.FlowStepsHook', val_steps=8, test_steps=(1, 2, 4, 8))]
