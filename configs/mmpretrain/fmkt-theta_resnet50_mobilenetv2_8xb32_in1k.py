_base_ = ['./fmkt_resnet50_mobilenetv2_8xb32_in1k.py']
distiller = dict(deploy_mode='student',
                 theta_loss=dict(type='fmkt_mm.DISTLoss', beta=2.0, gamma=2.0, tau=1.0))
