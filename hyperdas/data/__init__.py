"""Layer 1, data: RAVEL's files, what a target knows of them, base/source pairs, a synthetic world.
Imports only `hyperdas.core`."""
