"""The package's own exceptions share one base, so every command line can turn them into one
`error: ...` line (tracebacks only behind `--debug`). Each keeps the builtin base it always had."""


class HyperDASError(Exception):
    """An input or state the package cannot work with; the message names it and, where there is one, the fix."""


class CheckpointError(HyperDASError, ValueError):
    """A checkpoint that belongs to another run (configuration, model) or cannot be read."""


class ProvenanceError(CheckpointError):
    """A checkpoint built from other pairs, another target or another package version than the run's."""


class ResourceError(HyperDASError, MemoryError):
    """A run refused before it starts because it would not fit the memory or device it was given."""


class ResultsError(HyperDASError, ValueError):
    """A results file that cannot be read, named with the notebook or command that writes it."""


class WriteError(HyperDASError, OSError):
    """A results or checkpoint file that could not be written (a full disk, a read-only folder)."""


class TrainingDiverged(HyperDASError, FloatingPointError):
    """A training step whose loss or gradient is not finite: the run stops before the weights move."""
