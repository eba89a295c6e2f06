# FM-KT^Theta on the logits plus CWD between the raw student logits and the
# teacher's (the detection default's form: the flow's terms and the
# baseline's own), at CWD's total distillation weight: 1 on the flow, 1 on
# the pull toward the ensemble, 1 on the raw CWD term.
_base_ = ['./fmkt_pspnet_r18w32_to_r18w8_deploy-student.py']
distiller = dict(level_weights=1.0, raw_loss=dict(type='fmkt_mm.CWDLoss', tau=1.0), raw_loss_weight=1.0)
