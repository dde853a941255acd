"""Generation: cached step-wise sampling (`generator`), the sampling run from a checkpoint
to WAV files (`sampler`), the listening page with spectrograms (`listening_page`), real
songs from the run's dataset to compare with (`references`), and a genre classifier that
checks whether the samples' genres are audible (`genre_check`)."""
