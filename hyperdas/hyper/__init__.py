"""Layer 3, HyperDAS: the hypernetwork, its selection and subspace heads, the model that edits the
target, its training and memory estimate. Imports `core`, `data` and `target` (not `das`)."""
