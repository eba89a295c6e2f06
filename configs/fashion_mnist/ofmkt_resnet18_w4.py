# OFM-KT: no teacher; each flow step learns from the flow's detached ensemble
# and the student's plain head from the ensemble as well.
_base_ = ['./fmkt_resnet18_w16_to_resnet18_w4.py']
distiller = dict(_delete_=True, type='fmkt_mm.ClassificationDistiller', deploy_mode='student', online=True,
                 flow=dict(path='rectified', encoder=dict(type='mlp'), num_steps=8,
                           loss=dict(type='fmkt_mm.KDLoss', tau=4.0)),
                 theta_loss=dict(type='fmkt_mm.KDLoss', tau=4.0),
                 dummy_input_shape=(1, 28, 28))
