# Baseline: pixel-wise KD on the decode head's logits (each pixel's class
# distribution matched to the teacher's, tau 1) at CWD's weight (3); the
# deployed model is the plain student.
_base_ = ['./cwd_pspnet_r18w32_to_r18w8.py']
distiller = dict(loss=dict(_delete_=True, type='fmkt_mm.PixelKDLoss', tau=1.0))
