# Baseline: PKD on the three neck levels at the CWD recipe's weight (1 per level).
_base_ = ['./cwd_rtmdet_s_to_tiny.py']
distiller = dict(loss=dict(_delete_=True, type='fmkt_mm.PKDLoss'), teacher_norm=False)
