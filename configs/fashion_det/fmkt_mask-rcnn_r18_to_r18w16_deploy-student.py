# FM-KT for Mask R-CNN with zero inference cost: the student's raw levels are
# pulled toward the flows' detached ensemble, and the trained student is a
# plain Mask R-CNN (tools/export_student.py writes a checkpoint for plain mmdet).
_base_ = ['./fmkt_mask-rcnn_r18_to_r18w16_deploy-flow.py']
distiller = dict(deploy_mode='student')
