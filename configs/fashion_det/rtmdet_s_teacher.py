# Teacher: RTMDet-s (mmdet's CSPNeXt-P5 backbone at deepen 0.33 / widen 0.5,
# a 128-channel CSPNeXt-PAFPN with 3 levels at strides 8-32, the separate-BN
# head) on the 128 px composed set, from scratch, BatchNorm (one process).
_base_ = ['./_base_.py']
norm_cfg = dict(type='BN')
model = dict(
    type='RTMDet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[103.53, 116.28, 123.675],
                           std=[57.375, 57.12, 58.395], bgr_to_rgb=False, pad_size_divisor=32),
    backbone=dict(type='CSPNeXt', arch='P5', expand_ratio=0.5, deepen_factor=0.33, widen_factor=0.5,
                  channel_attention=True, norm_cfg=norm_cfg, act_cfg=dict(type='SiLU', inplace=True),
                  init_cfg=None),
    neck=dict(type='CSPNeXtPAFPN', in_channels=[128, 256, 512], out_channels=128, num_csp_blocks=1,
              expand_ratio=0.5, norm_cfg=norm_cfg, act_cfg=dict(type='SiLU', inplace=True)),
    bbox_head=dict(
        type='RTMDetSepBNHead', num_classes=10, in_channels=128, stacked_convs=2, feat_channels=128,
        anchor_generator=dict(type='MlvlPointGenerator', offset=0, strides=[8, 16, 32]),
        bbox_coder=dict(type='DistancePointBBoxCoder'),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        with_objectness=False, exp_on_reg=False, share_conv=True, pred_kernel_size=1,
        norm_cfg=norm_cfg, act_cfg=dict(type='SiLU', inplace=True)),
    train_cfg=dict(assigner=dict(type='DynamicSoftLabelAssigner', topk=13), allowed_border=-1,
                   pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.65),
                  max_per_img=100))
