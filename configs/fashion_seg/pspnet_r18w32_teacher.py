# The teacher: mmseg's PSPNet (ResNetV1c-18, dilated, output stride 8) at base
# width 32, trained from scratch on the composed set for 16 epochs (the
# students train 8).
_base_ = ['./_base_.py']
width = 32
max_epochs = 16
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         convert_to_iter_based=True),
]
model = dict(
    type='EncoderDecoder',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(type='ResNetV1c', depth=18, stem_channels=width, base_channels=width, num_stages=4,
                  out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),
                  norm_cfg={{_base_.norm_cfg}}, norm_eval=False, style='pytorch', contract_dilation=True),
    decode_head=dict(type='PSPHead', in_channels=8 * width, in_index=3, channels=2 * width,
                     pool_scales=(1, 2, 3, 6), dropout_ratio=0.1, num_classes={{_base_.num_classes}},
                     norm_cfg={{_base_.norm_cfg}}, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(type='FCNHead', in_channels=4 * width, in_index=2, channels=width, num_convs=1,
                        concat_input=False, dropout_ratio=0.1, num_classes={{_base_.num_classes}},
                        norm_cfg={{_base_.norm_cfg}}, align_corners=False,
                        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
