"""The science: networks, learning rules, the training step and protocol, data. Imports
neither Hydra nor anything above it (pyproject.toml: the import-linter contract)."""
