"""Pipeline stage balancing (re-exported from `costmodel.pipeline.balance`, where `costmodel.estimate`
uses the same dynamic program for plans whose stages do not divide the layers)."""

from costmodel.pipeline.balance import balance_layers, balanced_split, layer_weights, stage_costs

__all__ = ["balance_layers", "stage_costs", "layer_weights", "balanced_split"]
