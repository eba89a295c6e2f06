# YOLOX-M distilled from YOLOX-L on COCO: FM-KT (the detection default form; see _fmkt_neck_.py).
# Published for this pair: FGD 45.9 -> 46.6 COCO mAP. Not scored here.
# Teacher: mmdet's model-zoo YOLOX-L (49.4), by URL. Distillation stops where
# YOLOX switches off mosaic and mixup (YOLOXModeSwitchHook, the last 15
# epochs); the stock config's EMAHook is kept (the student's EMA only).
# The three PAFPN levels have 192 (M) and 256 (L) channels: an adapter per
# level is built by itself.
_base_ = ['mmdet::yolox/yolox_m_8xb8-300e_coco.py', './_fmkt_neck_.py']
distiller = dict(
    teacher=dict(config='mmdet::yolox/yolox_l_8xb8-300e_coco.py',
                 checkpoint='https://download.openmmlab.com/mmdetection/v2.0/yolox/yolox_l_8x8_300e_coco/yolox_l_8x8_300e_coco_20211126_140236-d3bd2b23.pth'),
    levels=(0, 1, 2),
    level_weights=0.5)
custom_hooks = [*_base_.custom_hooks,
    dict(type='fmkt_mm.StopDistillationHook', stop_epoch='pipeline_switch')]
