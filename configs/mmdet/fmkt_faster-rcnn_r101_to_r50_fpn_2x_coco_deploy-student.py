# As fmkt_faster-rcnn_r101_to_r50_fpn_2x_coco_deploy-flow.py (same model-zoo
# teacher, by URL), with
# zero inference cost: the trained student is a plain Faster R-CNN R50.
_base_ = ['./fmkt_faster-rcnn_r101_to_r50_fpn_2x_coco_deploy-flow.py']
distiller = dict(deploy_mode='student', ema_momentum=None)
