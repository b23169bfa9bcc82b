"""Figures drawn from results files only, one module per figure family (`hyperdas.experiments.plots`
registers them with the rest)."""
