"""Layer 0, the shared vocabulary: frozen configs, the cache, results files, metrics, answer scoring.
Imports nothing from the rest of the package."""
