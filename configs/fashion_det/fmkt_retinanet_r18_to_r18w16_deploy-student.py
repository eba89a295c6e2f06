# FM-KT with zero inference cost: the flows are trained as in the paper, and
# the student's raw FPN levels are pulled toward the flows' detached ensemble
# (loss_theta_l*). The head reads the raw levels, so the trained student is a
# plain RetinaNet (student_state_dict() loads into retinanet_r18w16_student.py).
_base_ = ['./fmkt_retinanet_r18_to_r18w16_deploy-flow.py']
distiller = dict(deploy_mode='student')
