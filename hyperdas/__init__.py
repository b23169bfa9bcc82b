"""HyperDAS reproduction package."""
