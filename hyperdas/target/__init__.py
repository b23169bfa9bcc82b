"""Layer 2, the frozen target: loading it, hooks that read and edit its residual stream, scoring an
intervention (Cause / Iso / Disentangle), running over several processes, the memory a training step
will take, and the provenance that ties a checkpoint to its model and pairs. Imports `core` and `data`."""
