"""beam_pipelines: the preprocessing command (`preprocess`), its Beam transforms
(`transforms`), the output folder's rules (`output_folder`) and the per-song code they run
(`ingest`)."""
