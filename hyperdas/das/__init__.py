"""Layer 3, the baselines: DAS and MDAS (a learned rotation at a fixed position) and full patching.
Imports the layers below."""
