"""Layer 2, the frozen target: loading it, hooks that read and edit its residual stream, scoring an
intervention (Cause / Iso / Disentangle), running over several processes. Imports `core` and `data`."""
