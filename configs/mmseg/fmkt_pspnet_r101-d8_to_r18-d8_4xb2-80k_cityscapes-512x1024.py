# FM-KT on Cityscapes: PSPNet R101-D8 (teacher, 79.76 mIoU) -> PSPNet R18-D8
# (student, 74.87 mIoU alone), mmseg's 80k schedule at 512x1024 on 4 GPUs x 2
# images; the recipe in _fmkt_last_stage_.py. Published on this pair: CWD
# 75.54, CanKD 76.24. The teacher is mmseg's model-zoo checkpoint, by URL
# (downloaded once into the torch hub cache, checked against the hash prefix
# of its name).
_base_ = ['mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py', './_fmkt_last_stage_.py']
distiller = dict(
    teacher=dict(config='mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
                 checkpoint='https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/'
                            'pspnet_r101-d8_512x1024_80k_cityscapes/'
                            'pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth'))
