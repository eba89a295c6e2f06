# A second teacher of another width: a CIFAR-style ResNet-18 with 8 base
# channels (0.17M parameters), for distillation from two teachers.
_base_ = ['./teacher_resnet18_w16.py']
model = dict(backbone=dict(stem_channels=8, base_channels=8), head=dict(in_channels=64))
