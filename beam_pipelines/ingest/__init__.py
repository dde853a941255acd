"""What the preprocessing pipeline runs per song, as plain functions the transforms call:
song sources (`sources`), the URL fetcher (`fetch`), FMA's tracks.csv (`fma_metadata`), song
to chunks, splits and summary (`song_chunks`), and TFRecord framing (`tfrecord_framing`).
Remote paths go through Beam's FileSystems, so this lives beside the pipeline, not in
wavegen."""
