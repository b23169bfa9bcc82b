"""Layer 4, experiments: what the notebooks run (HyperDAS result records, leakage controls, ablations,
figures). Imports every layer below; nothing below imports it."""
