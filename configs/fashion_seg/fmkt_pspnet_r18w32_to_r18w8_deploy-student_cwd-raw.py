# FM-KT^Theta plus CWD (Shu et al., 2021) between the raw student stage (through
# the adapter) and the teacher's: the flow's terms and the baseline's own.
_base_ = ['./fmkt_pspnet_r18w32_to_r18w8_deploy-student.py']
distiller = dict(raw_loss=dict(type='fmkt_mm.CWDLoss', tau=4.0), raw_loss_weight=1.0)
