"""Layer 3, HyperDAS: the hypernetwork, its selection and subspace heads, the model that edits the
target and its training. Imports `core`, `data` and `target` (not `das`)."""
