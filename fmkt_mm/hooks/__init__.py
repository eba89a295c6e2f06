"""MMEngine hooks of fmkt_mm."""
from .checkpoint import SafeCheckpointHook
from .flow_steps import FlowStepsHook, LossScheduleHook

__all__ = ['FlowStepsHook', 'LossScheduleHook', 'SafeCheckpointHook']
