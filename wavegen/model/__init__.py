"""The WaveNet (`wavenet`: network, presets, receptive field) and its output distributions
and losses (`losses`)."""
