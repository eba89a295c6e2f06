# FM-KT on CIFAR-100: ResNet-50 -> ResNet-18 (mmpretrain's CIFAR ResNets), KD with tau 4.
# Needs data/cifar100 and checkpoints/resnet50_8xb16_cifar100.pth.
_base_ = ['mmpretrain::resnet/resnet18_8xb16_cifar10.py']
custom_imports = dict(imports=['fmkt_mm'], allow_failed_imports=False)
_teacher = 'mmpretrain::resnet/resnet50_8xb16_cifar100.py'
model = dict(head=dict(num_classes=100))
data_preprocessor = dict(num_classes=100)
train_dataloader = dict(dataset=dict(type='CIFAR100', data_root='data/cifar100'))
val_dataloader = dict(dataset=dict(type='CIFAR100', data_root='data/cifar100'))
test_dataloader = val_dataloader
distiller = dict(
    type='fmkt_mm.ClassificationDistiller',
    variant='fmkt',
    teacher=dict(config=_teacher, checkpoint='checkpoints/resnet50_8xb16_cifar100.pth'),
    flow=dict(encoder=dict(type='mlp'), num_steps=8, loss=dict(type='fmkt_mm.KDLoss', tau=4.0)),
    dummy_input_shape=(3, 32, 32))
custom_hooks = [dict(type='fmkt_mm.FlowStepsHook', val_steps=8, test_steps=(1, 2, 4, 8))]
