"""wavegen: generate songs as raw audio with JAX.

The library behind the Beam pipeline (`beam_pipelines/`) and the Hydra entry points
(`experiments/`), one subpackage per stage:

- `wavegen.data`: audio I/O and quantization, the dataset schema and opened dataset, the
  training input pipeline, and a small music synthesizer for tests and the demo;
- `wavegen.ingest`: what only the preprocessing pipeline uses: song sources (folders, zip
  archives, URL lists), the URL fetcher, FMA metadata, per-song chunking, TFRecord framing;
- `wavegen.model`: the WaveNet (Flax NNX), its presets and its losses;
- `wavegen.training`: pure data-parallel steps, the training loop, checkpoints;
- `wavegen.generation`: cached step-wise generation, the sampling run, the listening page;
- `wavegen.runtime`: the process-level CPU tweak heavy entry points apply first.

It never imports Hydra or Beam: it takes plain dataclasses.
"""
