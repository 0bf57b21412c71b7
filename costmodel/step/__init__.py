"""One training step assembled from layer, network and pipeline costs: `estimate` (one plan),
`estimate_batch` (arrays of plans), plan checks, feasibility (estimate or rejection) and the text report."""
