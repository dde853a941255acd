"""wavegen."""
