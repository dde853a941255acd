"""wavegen: generate songs as raw audio with JAX.

The library behind the Beam pipeline (`beam_pipelines/`) and the Hydra entry points
(`experiments/`): audio I/O and quantization (`audio`), song sources (`sources`, `fetch`,
`fma`), the dataset schema (`dataset`), per-song preprocessing (`preprocess`), the input
pipeline (`input_pipeline`), the WaveNet (`model`, `losses`), training steps (`train`) and
loop (`trainer`), checkpoints (`checkpoint`), cached generation (`generate`), sampling and
its report (`sampling`, `report`), and a small music synthesizer for tests and the demo
(`synth`). It never imports Hydra: it takes plain dataclasses.
"""
