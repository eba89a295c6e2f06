# RTMDet-s distilled from RTMDet-m on COCO: FM-KT with CWD as its metric (see _fmkt_neck_cwd_.py).
# The published pair (mmyolo's RTMDet distillation through MMRazor, CWD on the
# neck): 44.6 -> 45.7 COCO mAP. Not scored here (see configs/mmdet/README.md).
# Teacher: mmdet's model-zoo RTMDet-m, by URL (downloaded once, checked
# against the hash prefix of its name, loaded with weights_only=True).
# Distillation stops where RTMDet switches off mosaic (the last 20 epochs),
# as the published recipe does; mmdet's EMAHook of the stock config is kept
# (fmkt_mm averages the student only, never the teacher).
_base_ = ['mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py', './_fmkt_neck_cwd_.py']
distiller = dict(
    teacher=dict(config='mmdet::rtmdet/rtmdet_m_8xb32-300e_coco.py',
                 checkpoint='https://download.openmmlab.com/mmdetection/v3.0/rtmdet/rtmdet_m_8xb32-300e_coco/rtmdet_m_8xb32-300e_coco_20220719_112220-229f527c.pth'),
    levels=(0, 1, 2),
    level_weights=0.5)
custom_hooks = [*_base_.custom_hooks,
    dict(type='fmkt_mm.StopDistillationHook', stop_epoch='pipeline_switch')]
