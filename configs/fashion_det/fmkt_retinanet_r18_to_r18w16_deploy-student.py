# FM-KT with zero inference cost: the flows are trained as in the paper, and
# the student's raw FPN levels are pulled toward the flows' detached ensemble
# (loss_theta_l*). The head reads the raw levels, so the trained student is a
# plain RetinaNet (student_state_dict() loads into retinanet_r18w16_student.py).
#
# raw_loss_weight=1.0 also matches the raw levels to the teacher's by PKD
# (loss_raw_l*, the PKD baseline's term): the best detection recipe of the
# README's recipe study (+1.1 mAP over PKD with each of two teachers, 7 of 10
# paired seeds), though not beyond 2 standard deviations. 0.0 gives FM-KT alone.
_base_ = ['./fmkt_retinanet_r18_to_r18w16_deploy-flow.py']
distiller = dict(deploy_mode='student', raw_loss_weight=1.0)
