# As fmkt_fcos_x101-64x4d_to_retinanet_r50_fpn_2x_coco_deploy-flow.py (same
# teacher checkpoint placeholder), with zero inference cost: the trained
# student is a plain RetinaNet R50.
_base_ = ['./fmkt_fcos_x101-64x4d_to_retinanet_r50_fpn_2x_coco_deploy-flow.py']
distiller = dict(deploy_mode='student', ema_momentum=None)
