"""Generation: cached step-wise sampling (`generator`), the sampling run from a checkpoint
to WAV files (`sampler`), and the listening page with spectrograms (`listening_page`)."""
