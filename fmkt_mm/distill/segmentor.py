"""FM-KT for mmseg segmentors (``EncoderDecoder``: any backbone and decode head).

The level flows of :class:`~fmkt_mm.distill.level_flow_distiller.LevelFlowDistiller`, on a
segmentor's tapped outputs, so nothing here knows a decode head:

* **features** (``student_tap='backbone'``, ``levels=(3, )``): a flow carries
  the backbone stage the decode head reads (PSPNet's and DeepLabV3's
  ``in_index=3``) toward the teacher's; in deploy mode ``'flow'`` the decode
  head reads the flow's ensemble, and the auxiliary head keeps reading its
  own raw stage (``in_index=2``) and its own loss;
* **per-pixel logits** (``student_tap='decode_head.conv_seg'``,
  ``teacher_tap='decode_head.conv_seg'``, ``levels=(0, )``): the flow
  carries the decode head's logit map toward the teacher's (the paper's
  logit mode, applied to every pixel), with a dense metric loss on every
  step (``CWDLoss``, ``PixelKDLoss``). (Tap the head's last convolution:
  mmseg calls ``decode_head.forward`` directly, so a hook on the head itself
  never fires.)

Deploy modes: ``'student'`` (FM-KT^Theta: the raw student is pulled toward
the flow's detached ensemble; the exported model is a plain mmseg segmentor,
zero inference cost) and ``'flow'`` (prediction runs the flow; with
:class:`~fmkt_mm.hooks.FlowStepsHook` each sample also gets
``pred_sem_seg_steps{N}`` and mmseg's ``IoUMetric`` scores every count).
The teacher runs only until its tap; several teachers, adapters for other
widths or sizes, the EMA of the flows, raw-loss and round-trip options are
the level distiller's.
"""

from ..registry import MODELS
from .level_flow_distiller import LevelFlowDistiller
from .level_options import DeployOptions, LevelDistillerOptions, LevelOptions


@MODELS.register_module()
class SegmentationDistiller(LevelFlowDistiller):
    """FM-KT for an mmseg ``EncoderDecoder`` student and teacher (see the
    module docstring); the arguments are :class:`LevelFlowDistiller`'s, with
    segmentation defaults: the last backbone stage, deploy mode ``'student'``.
    """

    prediction_field = 'pred_sem_seg'
    defaults = LevelDistillerOptions(
        levels=LevelOptions(pairs=(3, ), student_tap='backbone', teacher_tap='backbone',
                            dummy_input_shape=(3, 64, 64)),
        deploy=DeployOptions(mode='student'))
