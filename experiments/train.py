"""Train a WaveNet: a thin Hydra entry point over wavegen.training.loop.train_and_evaluate.

    .venv/bin/python experiments/train.py data.dir=DATASET_DIR model=small \
        train.steps=N train.batch_size=B train.seed=S train.log_every=K \
        train.eval_every=K train.checkpoint_every=K [optim.lr=...] [hydra.run.dir=OUT]
    .venv/bin/python experiments/train.py +experiment=smoke data.dir=DATASET_DIR
    .venv/bin/python experiments/train.py -m model=tiny,small optim.lr=1e-3,3e-4 ...

Running the same command on the same run directory resumes from its latest checkpoint.
"""

import logging
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Big XLA:CPU temporaries fault far less with transparent huge pages; glibc reads the
# setting at start-up, so this re-executes the process once, before anything heavy.
from wavegen.runtime import reexec_with_hugepage_malloc

reexec_with_hugepage_malloc()

# Ctrl-C and SIGTERM end the command with one line from here on (training's own
# SIGTERM handler, which saves a checkpoint first, takes over while it steps).
from experiments.stop_signals import end_in_one_line  # noqa: E402

end_in_one_line("training stopped; the same command resumes from the latest checkpoint")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from omegaconf.errors import MissingMandatoryValue  # noqa: E402

from experiments import hydra_schema as schema  # noqa: E402
from wavegen.errors import UserError  # noqa: E402
from wavegen.training import loop as trainer  # noqa: E402
from wavegen.training import run_dir as run_lib  # noqa: E402

schema.register()
schema.expand_user_in_argv()
log = logging.getLogger("wavegen.train")


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    for noisy in ("absl", "jax"):  # orbax's per-save chatter, JAX's backend probing
        logging.getLogger(noisy).setLevel(logging.WARNING)
    hydra_cfg = HydraConfig.get()
    workdir = hydra_cfg.runtime.output_dir
    with open(os.path.join(workdir, run_lib.CONFIG), "w") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    try:
        if cfg.train.distributed and not any(o.startswith("hydra.run.dir=")
                                             for o in hydra_cfg.overrides.hydra):
            raise trainer.TrainingError(
                "train.distributed=true needs hydra.run.dir=... (the same shared directory "
                "on every host): the default is a timestamp, different on each host")
        model_cfg, optim_cfg, data, run = schema.to_train_job(cfg)
        summary = trainer.train_and_evaluate(model_cfg, optim_cfg, data, run, workdir)
    except (MissingMandatoryValue, UserError) as e:  # anything else is a bug: its traceback
        log.error("%s", schema.one_line_error(e))
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return float("nan")  # this job failed; the sweep goes on (and says so)
        sys.exit(1)
    return summary["best_val_bits"]


if __name__ == "__main__":
    main()
