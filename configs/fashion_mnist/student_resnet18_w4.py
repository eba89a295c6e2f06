# Student: a CIFAR-style ResNet-18 cut to three stages with 4 base channels
# (about 12k parameters), trained on its own as the baseline.
_base_ = ['./_base_.py']
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet_CIFAR', depth=18, in_channels=1, stem_channels=8,
                  base_channels=4, num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1),
                  out_indices=(2, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=16,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
