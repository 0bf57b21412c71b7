"""`ExactScorer`: one candidate through `costmodel.estimate`, with the even split (closed form) and,
where the layers do not divide or balancing helps, the balanced split (`planner.balance`, event
simulation); the faster variant that fits wins. `prefetch` runs the simulations of candidates about to
be scored in batches (one numpy sweep per schedule shape); scores are the same either way."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from costmodel.specs import ClusterSpec, ModelSpec, StepEstimate, TrainingSpec
from costmodel.step.estimate import estimate, prefetch_simulations

from .balance import balanced_split
from .space import Space

__all__ = ["ExactScorer"]


class ExactScorer:
    """Exact estimates of candidates (memoized): the best fitting split variant per candidate."""

    def __init__(self, model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, space: Space, *,
                 calibration: Any = None, topology: Any = None, rebalance: bool = False) -> None:
        self.model, self.cluster, self.training, self.space = model, cluster, training, space
        self.calibration, self.topology, self.rebalance = calibration, topology, rebalance
        self.calls = 0
        self._memo: dict[int, tuple[StepEstimate | None, StepEstimate]] = {}
        self._variants: dict[int, list] = {}

    def variants(self, i: int) -> list:
        """The plans tried for candidate i: even split (when the layers divide) and balanced split."""
        hit = self._variants.get(i)
        if hit is None:
            hit = self._variants[i] = self._make_variants(i)
        return hit

    def prefetch(self, indices: Iterable[int]) -> int:
        """Run the pipeline simulations the candidates `indices` will need, batched per schedule shape
        (`costmodel.step.estimate.prefetch_simulations`), so scoring them one by one later is cheap. Scores
        nothing (`calls` and `scored()` are unchanged); returns how many simulations ran."""
        plans = [p for i in indices if int(i) not in self._memo
                 for p in self.variants(int(i)) if p.layers_per_stage is not None]
        return prefetch_simulations(self.model, self.cluster, self.training, plans,
                                    calibration=self.calibration, topology=self.topology)

    def _make_variants(self, i: int) -> list:
        base = self.space.plan(i)
        layers = self.model.total_layers
        stages = base.pp * base.virtual_stages
        out = []
        if layers % stages == 0:
            out.append(base)
        if stages > 1 and (layers % stages or self.rebalance):
            split = balanced_split(self.model, self.training, base)
            if split != base.stage_layers(layers):
                out.append(base.model_copy(update={"layers_per_stage": split}))
        return out

    def _score(self, i: int) -> tuple[StepEstimate | None, StepEstimate]:
        hit = self._memo.get(i)
        if hit is not None:
            return hit
        self.calls += 1
        ests = [estimate(self.model, self.cluster, self.training, p, calibration=self.calibration,
                         topology=self.topology) for p in self.variants(i)]
        fitting = [e for e in ests if e.fits]
        best_fit = min(fitting, key=lambda e: (e.step_time_s, e.memory.peak_bytes)) if fitting else None
        smallest = min(ests, key=lambda e: (e.memory.peak_bytes, e.step_time_s))
        self._memo[i] = (best_fit, smallest)
        return self._memo[i]

    def scored(self) -> list[StepEstimate | None]:
        """The best fitting estimate of every candidate scored so far, in candidate order."""
        return [self._memo[i][0] for i in sorted(self._memo)]

    def best(self, i: int, *, require_fit: bool = True) -> StepEstimate | None:
        """The fastest fitting variant of candidate i (None if none fits); with require_fit=False the
        variant needing the least memory."""
        best_fit, smallest = self._score(i)
        return best_fit if require_fit else smallest
