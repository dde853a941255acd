"""beam_pipelines: Beam transforms and the preprocessing command, wired from wavegen functions."""
