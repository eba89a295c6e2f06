# FM-KT^Theta: the flow trains with its own classifier copy; the student's
# plain head learns from the flow's ensemble, and inference runs the student
# alone (zero extra cost; exportable as a plain mmpretrain model).
_base_ = ['./fmkt_resnet18_w16_to_resnet18_w4.py']
distiller = dict(deploy_mode='student', theta_loss=dict(type='fmkt_mm.KDLoss', tau=4.0))
