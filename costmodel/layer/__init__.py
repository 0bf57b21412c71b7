"""One Transformer block, the embedding and the head on one GPU: parameters, FLOPs, memory, kernel times.

Pure formulas (numbers or numpy arrays) with their sources; `context` holds what a step is priced from."""
