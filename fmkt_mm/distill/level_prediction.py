"""What a level distiller predicts with: :class:`LevelFlowPrediction`, the
inference side of :class:`~fmkt_mm.distill.LevelFlowDistiller` (deploy mode
``'flow'``: the flows' implicit ensemble replaces each distilled level the
heads read; ``'student'``: the plain student)."""
from typing import List, Optional, Sequence

from torch import Tensor

from .tap_rewrite import rewrite_tap
from .teacher import weighted


class LevelFlowPrediction:
    """Mixed into :class:`~fmkt_mm.distill.LevelFlowDistiller`; reads its
    ``level_pairs``, ``deploy_mode``, ``eval_steps``, ``extra_eval_steps``,
    ``batch_levels``, ``prediction_field``, the student and its tap, and the
    inference flows (:meth:`~fmkt_mm.distill.flow_ema.FlowEMA._inference_flows`)."""

    def deployed_ensemble(self, k: int, level: Tensor, num_steps: int) -> Tensor:
        """What the heads read for level pair ``k`` at inference: the
        implicit ensemble (student space) of the deployed teacher's flow, or
        the weighted mean over all teachers' flows."""
        teachers, weights = self.deployed_teachers()
        return self._inference_flows().weighted_ensemble(k, level, num_steps, teachers, weights)

    def deployed_levels(self, levels: Sequence[Tensor], num_steps: Optional[int] = None) -> List[Tensor]:
        """The levels the heads read at inference in deploy mode ``'flow'``."""
        levels, steps = list(levels), num_steps or self.eval_steps
        if self.batch_levels:
            teachers, weights = self.deployed_teachers()
            flows = self._inference_flows()
            runs = [flows.batched_runs(j, [levels[s] for s, _ in self.level_pairs], steps) for j in teachers]
            for k, (s, _) in enumerate(self.level_pairs):
                levels[s] = weighted([run.outputs[k].mean_estimate() for run in runs], weights)
            return levels
        for k, (s, _) in enumerate(self.level_pairs):
            levels[s] = self.deployed_ensemble(k, levels[s], steps)
        return levels

    def predict(self, inputs: Tensor, data_samples: Optional[list] = None) -> list:
        """The student's data samples with ``prediction_field`` filled, as its own ``predict``.

        With ``extra_eval_steps`` (deploy mode ``'flow'``), each sample also
        gets ``pred_instances_steps{N}``: the detections with the flows'
        ensemble at ``N`` steps; ``pred_instances`` stays the one at
        ``eval_steps``. The student's own ``predict`` runs once per count
        (backbone included: nothing of the student is patched)."""
        if self.deploy_mode == 'student':
            return self.student.predict(inputs, data_samples)
        with rewrite_tap(self.student, self.student_tap, self.deployed_levels):
            samples = self.student.predict(inputs, data_samples)
        counts = [n for n in dict.fromkeys(self.extra_eval_steps) if n != self.eval_steps]
        field = self.prediction_field
        main = [sample.get(field) for sample in samples]  # predict writes into the samples it is given
        extra = {}
        for steps in counts:
            with rewrite_tap(self.student, self.student_tap, lambda levels: self.deployed_levels(levels, steps)):
                extra[steps] = [sample.get(field) for sample in self.student.predict(inputs, data_samples)]
        for k, sample in enumerate(samples if counts else []):
            setattr(sample, field, main[k])  # through the sample type's own property
            for steps, predictions in extra.items():
                sample.set_field(predictions[k], f'{field}_steps{steps}')
        return samples

    def _forward(self, inputs: Tensor, data_samples=None):
        if self.deploy_mode == 'student':
            return self.student(inputs, data_samples, mode='tensor')
        with rewrite_tap(self.student, self.student_tap, self.deployed_levels):
            return self.student(inputs, data_samples, mode='tensor')
