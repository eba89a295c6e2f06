# FM-KT on CIFAR-100: ResNet-50 -> ResNet-18 (mmpretrain's CIFAR ResNets), KD with tau 4.
# Needs data/cifar100; the teacher is mmpretrain's model-zoo ResNet-50 (by URL).
_base_ = ['mmpretrain::resnet/resnet18_8xb16_cifar10.py']
runner_type = 'fmkt_mm.DistillRunner'  # the distiller is applied under every launcher (mim too)
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
_teacher = 'mmpretrain::resnet/resnet50_8xb16_cifar100.py'
model = dict(head=dict(num_classes=100))
data_preprocessor = dict(num_classes=100)
train_dataloader = dict(dataset=dict(type='CIFAR100', data_root='data/cifar100'))
val_dataloader = dict(dataset=dict(type='CIFAR100', data_root='data/cifar100'))
test_dataloader = val_dataloader
distiller = dict(
    type='fmkt_mm.ClassificationDistiller',
    deploy_mode='flow',
    teacher=dict(config=_teacher, checkpoint='https://download.openmmlab.com/mmclassification/v0/resnet/resnet50_b16x8_cifar100_20210528-67b58a1b.pth'),
    flow=dict(encoder=dict(type='mlp'), num_steps=8, loss=dict(type='fmkt_mm.KDLoss', tau=4.0)),
    dummy_input_shape=(3, 32, 32))
custom_hooks = [dict(type='fmkt_mm.FlowStepsHook', val_steps=8, test_steps=(1, 2, 4, 8))]
