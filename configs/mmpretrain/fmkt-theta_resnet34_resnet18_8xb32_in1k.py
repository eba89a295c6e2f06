# FM-KT^Theta: the same flow, but inference runs the plain ResNet-18 (zero extra cost).
_base_ = ['./fmkt_resnet34_resnet18_8xb32_in1k.py']
distiller = dict(deploy_mode='student',
                 theta_loss=dict(type='fmkt_mm.DISTLoss', beta=2.0, gamma=2.0, tau=1.0))
