"""Sample songs from a training run's checkpoint: a thin Hydra entry point.

    .venv/bin/python experiments/sample.py checkpoint=RUN_DIR [step=best|latest|N] \
        seconds=4 num_samples=4 temperature=1.0 [genre=NAME] \
        [prime=SONG_FILE prime_seconds=1] [seed=0] [use_ema=true|false] \
        [data_dir=DATASET] [cpu_threads=1|null] output_dir=DIR

Writes DIR/sample_000.wav ... (16-bit PCM at the dataset's sample rate), a spectrogram
PNG for each, DIR/samples.json (settings, checkpoint step, samples_per_s) and
DIR/index.html, a listening page that opens from disk (with a real validation song of
each genre, reference_000.wav ..., when the run's dataset is at hand).
"""

import logging
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Ctrl-C and SIGTERM end the command with one line from here on.
from experiments.stop_signals import end_in_one_line  # noqa: E402

end_in_one_line("sampling stopped; the files written so far are incomplete")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from omegaconf.errors import MissingMandatoryValue  # noqa: E402

from experiments import hydra_schema as schema  # noqa: E402
from wavegen import runtime  # noqa: E402
from wavegen.errors import UserError  # noqa: E402
from wavegen.generation import sampler  # noqa: E402

schema.register_sample()
schema.expand_user_in_argv()
log = logging.getLogger("wavegen.sample")


@hydra.main(version_base="1.3", config_path="../configs", config_name="sample")
def main(cfg: DictConfig) -> None:
    for noisy in ("absl", "jax"):  # orbax's per-save chatter, JAX's backend probing
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        sample_cfg = schema.to_sample_config(cfg)
        # Before the first JAX operation: XLA:CPU sizes its thread pool then.
        runtime.limit_cpu_threads(sample_cfg.cpu_threads)
        result = sampler.run_sampling(sample_cfg)
    except (MissingMandatoryValue, UserError) as e:  # anything else is a bug: its traceback
        log.error("%s", schema.one_line_error(e))
        sys.exit(1)
    log.info("%d streams of %.1f s from step %d (%s) at %.0f samples/s -> %s",
             result["num_streams"], result["samples_per_stream"] / result["sample_rate"],
             result["checkpoint_step"], "EMA" if result["use_ema"] else "as trained",
             result["samples_per_s"], os.path.join(sample_cfg.output_dir, "index.html"))
    check = result.get("genre_check") or {}
    if check.get("samples_accuracy") is not None:
        log.info("genre check: the classifier names the genre of %.0f%% of the samples' "
                 "windows (real songs: %s, chance %.0f%%)", 100 * check["samples_accuracy"],
                 "-" if check["real_accuracy"] is None
                 else f"{100 * check['real_accuracy']:.0f}%", 100 * check["chance"])


if __name__ == "__main__":
    main()
