"""What the preprocessing pipeline runs per song, free of Beam: song sources (`sources`),
the URL fetcher (`fetch`), FMA's tracks.csv (`fma_metadata`), song to chunks, splits and
summary (`song_chunks`), and TFRecord framing (`tfrecord_framing`). `beam_pipelines/`
wires these into transforms."""
