"""Score a checkpoint on a whole split: the number to report.

    .venv/bin/python experiments/evaluate.py checkpoint=RUN_DIR [step=best|latest|N] \
        [split=test] [use_ema=true|false] [batches=null] [batch_size=16] [data_dir=DIR]

Every target of every chunk of the split is scored once (data-parallel over the local
devices); the report goes to RUN_DIR/eval/<split>-<step>.json (overall, per genre, per
song, and the unigram baselines) and RUN_DIR/eval/<split>-<step>-songs.csv (worst songs
first). See wavegen.training.evaluation.
"""

import logging
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Ctrl-C and SIGTERM end the command with one line from here on.
from experiments.stop_signals import end_in_one_line  # noqa: E402

end_in_one_line("evaluation stopped; its report is written only when it completes")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from omegaconf.errors import MissingMandatoryValue  # noqa: E402

from experiments import hydra_schema as schema  # noqa: E402
from wavegen.errors import UserError  # noqa: E402
from wavegen.training import evaluation  # noqa: E402

schema.register_evaluate()
log = logging.getLogger("wavegen.evaluate")


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    for noisy in ("absl", "jax"):  # orbax's chatter, JAX's backend probing
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        report = evaluation.evaluate_checkpoint(schema.to_eval_config(cfg))
    except (MissingMandatoryValue, UserError) as e:  # anything else is a bug: its traceback
        log.error("%s", schema.one_line_error(e))
        sys.exit(1)
    log.info("%s", evaluation.format_report(report))


if __name__ == "__main__":
    main()
