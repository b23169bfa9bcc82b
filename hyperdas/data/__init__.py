"""RAVEL data: official files, model-specific filtering, base/source pairs, a synthetic world."""
