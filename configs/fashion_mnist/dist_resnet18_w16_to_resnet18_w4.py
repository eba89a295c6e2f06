# Baseline: DIST (Huang et al., 2022), relations between and within classes.
_base_ = ['./kd_resnet18_w16_to_resnet18_w4.py']
distiller = dict(loss=dict(_delete_=True, type='fmkt_mm.DISTLoss', beta=1.0, gamma=1.0, tau=1.0))
