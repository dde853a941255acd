"""wavegen's Hydra configuration tree (YAML groups) and its structured-config schemas."""
