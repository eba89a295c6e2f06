# FM-KT on Cityscapes: DeepLabV3 R101-D8 (teacher, 80.2 mIoU in mmseg's zoo)
# -> DeepLabV3 R18-D8 (student, 76.70 mIoU alone), mmseg's 80k schedule at
# 512x1024; the recipe in _fmkt_last_stage_.py. Published on this pair: CanKD
# 77.12. The teacher by its model-zoo URL.
_base_ = ['mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py', './_fmkt_last_stage_.py']
distiller = dict(
    teacher=dict(config='mmseg::deeplabv3/deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024.py',
                 checkpoint='https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3/'
                            'deeplabv3_r101-d8_512x1024_80k_cityscapes/'
                            'deeplabv3_r101-d8_512x1024_80k_cityscapes_20200606_113503-9e428899.pth'))
