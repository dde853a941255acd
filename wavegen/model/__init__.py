"""The WaveNet (`wavenet`: network, presets, receptive field, input checks, the layer
arithmetic shared with the generator) and its output distributions' losses (`losses`)."""
