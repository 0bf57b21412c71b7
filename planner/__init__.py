"""paraplan's planner: search every way to parallelize a model over a cluster, rank the plans that fit.

    from planner import search, sweep
    result = search(model, cluster, training, top_k=10)      # plus keyword constraints (tp=8, max_pp=16)
    result.best.plan, result.best.estimate                   # a ParallelPlan and its StepEstimate
    df = result.to_frame()
"""

from .balance import balance_layers, balanced_split
from .constraints import Constraints
from .result import RankedPlan, SearchResult
from .search import search, search_exhaustive
from .space import Space, build_space
from .sweep import sweep

__all__ = [
    "Constraints", "RankedPlan", "SearchResult", "Space", "balance_layers", "balanced_split", "build_space",
    "search", "search_exhaustive", "sweep",
]
