# FM-KT on ImageNet: ResNet-34 (73.3) -> ResNet-18 (69.8), logit-based, N_train = 8,
# an MLP meta-encoder on the last feature map, DIST on every step (beta = gamma = 2, tau = 1).
# Needs data/imagenet (mmpretrain layout); the teacher is mmpretrain's model-zoo ResNet-34,
# by URL (downloaded once into the torch hub cache).
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']
runner_type = 'fmkt_mm.DistillRunner'  # the distiller is applied under every launcher (mim too)
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
distiller = dict(
    type='fmkt_mm.ClassificationDistiller',
    deploy_mode='flow',
    teacher=dict(config='mmpretrain::resnet/resnet34_8xb32_in1k.py',
                 checkpoint='https://download.openmmlab.com/mmclassification/v0/resnet/resnet34_8xb32_in1k_20210831-f257d4e6.pth'),
    flow=dict(path='rectified', encoder=dict(type='mlp', hidden_ratio=2.0, num_blocks=1),
              num_steps=8, loss=dict(type='fmkt_mm.DISTLoss', beta=2.0, gamma=2.0, tau=1.0)),
    student_tap='backbone',
    teacher_tap='head',
    dummy_input_shape=(3, 224, 224))
custom_hooks = [dict(type='fmkt_mm.FlowStepsHook', val_steps=8, test_steps=(1, 2, 4, 8))]
