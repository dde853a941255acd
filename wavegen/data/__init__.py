"""Audio and datasets: decoding and quantization (`audio`), the dataset schema and the
opened dataset (`dataset`), batches for training and evaluation (`input_pipeline`), and a
music synthesizer for tests and the demo (`synth`)."""
