# FM-KT for Faster R-CNN with zero inference cost: the trained student is a
# plain Faster R-CNN (see fmkt_retinanet_r18_to_r18w16_deploy-student.py).
_base_ = ['./fmkt_faster-rcnn_r18_to_r18w16_deploy-flow.py']
distiller = dict(deploy_mode='student')
