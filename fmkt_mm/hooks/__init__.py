"""MMEngine hooks of fmkt_mm, one per file."""
from .distill_ema_hook import DistillEMAHook
from .durable_checkpoint_hook import DurableCheckpointHook
from .export_student_hook import ExportStudentHook
from .finite_gradient_hook import FiniteGradientHook, NonFiniteGradientError
from .flow_ema_hook import FlowEMAHook
from .flow_roundtrip_hook import FlowRoundTripHook
from .flow_steps_hook import FlowStepsHook
from .loss_schedule_hook import LossScheduleHook
from .loss_weight_schedule_hook import LossWeightScheduleHook
from .progressive_distillation_hook import ProgressiveDistillationHook
from .random_state_hook import RandomStateHook
from .safe_checkpoint_hook import SafeCheckpointHook
from .schedules import Schedule, schedule_factor
from .stop_distillation_hook import StopDistillationHook
from .teacher_eval_hook import TeacherEvalHook

__all__ = ['DistillEMAHook', 'DurableCheckpointHook', 'ExportStudentHook', 'FiniteGradientHook',
           'NonFiniteGradientError', 'FlowEMAHook', 'FlowRoundTripHook', 'FlowStepsHook', 'LossScheduleHook',
           'LossWeightScheduleHook', 'ProgressiveDistillationHook', 'RandomStateHook', 'SafeCheckpointHook',
           'StopDistillationHook', 'TeacherEvalHook', 'Schedule', 'schedule_factor']
