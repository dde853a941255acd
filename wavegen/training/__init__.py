"""Training: pure data-parallel steps (`steps`), the loop that owns logging, evaluation
and checkpoints (`loop`), and orbax checkpoints (`checkpoints`)."""
