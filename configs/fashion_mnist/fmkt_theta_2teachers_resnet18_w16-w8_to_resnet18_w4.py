# FM-KT^Theta from two teachers: the flows learn from both teachers, the
# student's plain head learns from both flows' ensembles (weighted), and the
# exported student is a plain mmpretrain model.
_base_ = ['./fmkt_2teachers_resnet18_w16-w8_to_resnet18_w4.py']
distiller = dict(deploy_mode='student', theta_loss=dict(type='fmkt_mm.KDLoss', tau=4.0))
