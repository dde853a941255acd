"""beam_pipelines: the preprocessing command (`preprocess`), its Beam transforms
(`transforms`), the output folder's rules (`output_folder`), the per-song code they run
(`ingest`) and a DaskRunner fit for this pipeline (`dask_runner`)."""
