# FM-KT for RTMDet: the form the RTMDet study supports (docs/benchmarks.md,
# "RTMDet: FM-KT against the published CWD recipe"): CWD (tau 1) as the
# flows' metric and on the raw levels, the teacher's levels standardised per
# channel, as in the published CWD recipe. At the same total weight, this
# form tied the CWD recipe over 3 seeds x 2 teachers, where the detection
# default's form (PKD) lost to it (-4.5 [-8.9, -0.2] mAP).
_base_ = ['./_fmkt_neck_.py']
distiller = dict(
    flow=dict(loss=dict(_delete_=True, type='fmkt_mm.CWDLoss', tau=1.0)),
    raw_loss=dict(type='fmkt_mm.CWDLoss', tau=1.0),
    teacher_norm=True)
