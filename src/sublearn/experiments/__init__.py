"""Experiments: each one wires pipeline stages into a command with its own config."""
