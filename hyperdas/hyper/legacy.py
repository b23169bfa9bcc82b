"""What checkpoints and results files saved before a config field existed were made with, where it
differs from today's default: a file that predates a field is read with these values, not the default."""

MODEL_BEFORE_FIELDS = {"base_read": "prompt"}  # HyperDASConfig
TRAIN_BEFORE_FIELDS = {"train_selection": "soft", "selection_entropy": 0.0}  # HyperTrainConfig
