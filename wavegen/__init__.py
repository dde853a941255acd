"""wavegen: generate songs as raw audio with JAX.

The library behind the Beam pipeline (`beam_pipelines/`, whose per-song code lives in
`beam_pipelines.ingest`) and the Hydra entry points (`experiments/`), one subpackage per
stage:

- `wavegen.data`: audio I/O and quantization, the dataset schema and opened dataset, the
  training input pipeline, and a small music synthesizer for tests and the demo;
- `wavegen.model`: the WaveNet (Flax NNX), its presets and its losses;
- `wavegen.training`: pure data-parallel steps, the training loop, checkpoints;
- `wavegen.generation`: cached step-wise generation, the sampling run, the listening page;
- `wavegen.runtime`: the process-level CPU tweak heavy entry points apply first.

It never imports Hydra or Beam: it takes plain dataclasses.
"""
