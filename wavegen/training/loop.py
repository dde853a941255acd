"""The training loop: the one place that owns logging, checkpoints, signals and processes.

`train_and_evaluate(model_cfg, optim_cfg, run, workdir)` trains data-parallel on every
local device (jax.pmap), evaluates, checkpoints and resumes; the steps it calls are the
pure functions of `wavegen.training.steps`. It writes into `workdir`:

- `checkpoints/`: orbax steps every `checkpoint_every` and at the end (the last
  `keep_checkpoints` and the best by validation bits/sample), each with the model config,
  the dataset spec and the data iterator's position (`wavegen.training.checkpoints`);
- `metrics.jsonl`: one JSON object per logged step (`step`, `train_bits`, `lr`,
  `grad_norm`, `samples_per_s`; at evaluations also `val_bits`, `unigram_bits`);
- `tensorboard/`: the same scalars as TensorBoard event files;
- `run_summary.json`: the final summary.

Resuming: when `workdir` has checkpoints (or `resume=True`), the latest is restored:
parameters, optimizer state, EMA, step, RNG and the data iterator's position, plus the
partial window of not-yet-logged training metrics, so the resumed run logs exactly what an
uninterrupted one would (on CPU: bitwise; tests/test_experiments.py checks it). SIGTERM
saves a checkpoint and exits with status 143. A non-finite loss stops the run naming the
step; no checkpoint is written from a non-finite state.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time

import jax
import numpy as np

from wavegen.training import checkpoints as ckpt_lib
from wavegen.data import input_pipeline
from wavegen.model import wavenet as model_lib
from wavegen.training import steps as train_lib
from wavegen.data.dataset import load_dataset_spec

log = logging.getLogger("wavegen.train")


class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message is one clear line."""


class NonFiniteLoss(TrainingError):
    pass


class Preempted(SystemExit):
    """SIGTERM: a checkpoint was saved; exit status 143 (128 + SIGTERM)."""

    def __init__(self, step: int):
        super().__init__(143)
        self.step = step


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The run's knobs besides the model and the optimizer (Hydra's `data` and `train`)."""

    data_dir: str
    steps: int
    batch_size: int  # global, over every device of every process
    seed: int = 0
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    eval_batches: int | None = None  # per evaluation; None: the whole split
    eval_batch_size: int | None = None  # global; None: batch_size
    targets: int | None = None  # scored targets per example; None: the chunk's
    shuffle_buffer: int = 512
    train_split: str = "train"
    eval_split: str = "validation"
    resume: bool | None = None  # None: resume when workdir has checkpoints
    device_count: int | None = None  # None: every local device
    progress: bool = True
    distributed: bool = False
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "eval_every", "checkpoint_every",
                     "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")


# --------------------------------------------------------------------------------------
# Set-up


def init_distributed(run: RunConfig) -> None:
    """jax.distributed.initialize for multi-host runs; None values: JAX's auto-detection
    (SLURM, Open MPI, TPU pods, Kubernetes...) or its environment variables."""
    kwargs = {k: v for k, v in (("coordinator_address", run.coordinator_address),
                                ("num_processes", run.num_processes),
                                ("process_id", run.process_id)) if v is not None}
    # Collectives between CPU processes (tests, CPU clusters); GPUs and TPUs ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)


def pick_devices(run: RunConfig) -> list:
    local = jax.local_devices()
    n = run.device_count or len(local)
    if n > len(local):
        raise TrainingError(f"train.device_count={n} but this process has only "
                            f"{len(local)} {local[0].platform} device(s)")
    total = n * jax.process_count()
    for name, size in (("batch_size", run.batch_size),
                       ("eval_batch_size", run.eval_batch_size or run.batch_size)):
        if size % total:
            raise TrainingError(
                f"train.{name}={size} does not divide evenly over {total} device(s) "
                f"({n} per process x {jax.process_count()} process(es)); use a multiple "
                f"of {total} or set train.device_count")
    return local[:n]


def _differences(a: dict, b: dict) -> list[str]:
    return [f"{k}: checkpoint {a.get(k)!r}, now {b.get(k)!r}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_same_run(stored: dict, meta: dict, where: str) -> None:
    """Refuses to resume a checkpoint of another model, dataset, optimizer or data stream
    (any of which would break the exact continuation), naming the differences."""
    for key, what in (("model_config", "a different model config"),
                      ("dataset", "a dataset with other audio settings"),
                      ("optim", "other optimizer settings"),
                      ("stream", "another data stream (batch, seed, targets, split)")):
        diff = _differences(stored.get(key, {}), meta[key])
        if diff:
            raise TrainingError(f"{where} holds checkpoints of {what} ({'; '.join(diff)}); "
                                "use a new run directory (hydra.run.dir=...) or the same "
                                "settings")


class _SigTerm:
    """Turns SIGTERM into a flag the loop checks after each step (main thread only)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class _MetricsLog:
    """metrics.jsonl and TensorBoard scalars (process 0 only)."""

    def __init__(self, workdir: str, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if enabled:
            import tensorflow as tf

            self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """On resume: drop lines logged after the restored step (they are redone)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        with open(self.path, "w") as f:
            f.writelines(keep)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        import tensorflow as tf

        with self._tb.as_default(step=record["step"]):
            for k, v in record.items():
                if k != "step" and v is not None:
                    tf.summary.scalar(k, v)
        self._tb.flush()

    def close(self):
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------------------
# The loop


@dataclasses.dataclass
class _Window:
    """Training metrics since the last log line (checkpointed, so resuming is exact)."""

    bits: list = dataclasses.field(default_factory=list)
    grad_norm: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    pending: list = dataclasses.field(default_factory=list)  # device metrics, not yet read

    def flush(self, first_step: int) -> None:
        """Reads pending device metrics; raises NonFiniteLoss naming the first bad step."""
        for i, m in enumerate(jax.device_get(self.pending)):
            bits, gnorm = float(m["loss_bits"][0]), float(m["grad_norm"][0])
            if not (math.isfinite(bits) and math.isfinite(gnorm)):
                raise NonFiniteLoss(
                    f"non-finite loss at step {first_step + i} (train bits {bits}, gradient "
                    f"norm {gnorm}); stopping. The last good checkpoint is kept; lower "
                    "optim.lr or raise optim.warmup_steps")
            self.bits.append(bits)
            self.grad_norm.append(gnorm)
        self.pending = []

    def to_json(self) -> dict:
        return {"bits": self.bits, "grad_norm": self.grad_norm, "seconds": self.seconds}


def train_and_evaluate(model_cfg: model_lib.ModelConfig, optim_cfg: train_lib.OptimConfig,
                       run: RunConfig, workdir: str) -> dict:
    """Trains (or resumes) one run in `workdir`; returns the final summary."""
    t_start = time.time()
    if run.distributed:
        init_distributed(run)
    is_main = jax.process_index() == 0
    devices = pick_devices(run)
    n_total = len(devices) * jax.process_count()
    per_device = run.batch_size // n_total
    eval_per_device = (run.eval_batch_size or run.batch_size) // n_total
    try:
        spec = load_dataset_spec(run.data_dir)
        model_cfg = model_lib.for_dataset(model_cfg, spec)
        train_lib.check_compatible(model_cfg, spec)
    except ValueError as e:  # DatasetError and incompatibilities
        raise TrainingError(str(e)) from e
    rf = model_lib.receptive_field(model_cfg)
    targets = run.targets or spec.target_samples
    os.makedirs(workdir, exist_ok=True)
    input_pipeline.check_splits(run.data_dir, run.train_split, run.eval_split)
    stream = {"batch_size": run.batch_size, "seed": run.seed, "targets": targets,
              "shuffle_buffer": run.shuffle_buffer, "train_split": run.train_split,
              "devices": n_total}
    meta = ckpt_lib.run_meta(model_cfg, spec, optim=dataclasses.asdict(optim_cfg),
                             stream=stream)

    ckpts = ckpt_lib.Checkpoints(os.path.join(workdir, "checkpoints"), run.keep_checkpoints)
    latest = ckpts.latest_step()
    if run.resume is True and latest is None:
        raise TrainingError(f"train.resume=true but {ckpts.directory} holds no checkpoint")
    if run.resume is False and latest is not None:
        raise TrainingError(f"{ckpts.directory} already holds checkpoints (latest step "
                            f"{latest}); resume (train.resume=true or unset) or use a new "
                            "hydra.run.dir")
    if latest is not None:
        check_same_run(ckpts.meta(latest), meta, ckpts.directory)

    graphdef, state = train_lib.create_train_state(model_cfg, optim_cfg, seed=run.seed)
    batches = train_lib.train_iterator(
        run.data_dir, model_cfg, per_device_batch=per_device, targets=run.targets,
        seed=run.seed, shuffle_buffer=run.shuffle_buffer, split=run.train_split,
        num_devices=len(devices))
    metrics_log = _MetricsLog(workdir, is_main)
    window = _Window()
    history = {"best_val_bits": None, "best_step": None, "unigram_bits": None}
    if latest is not None:
        state, stored = ckpts.restore(latest, state, iterator=batches)
        window = _Window(**stored.get("window", {}))
        history.update(stored.get("history", {}))
        metrics_log.truncate_after(latest)
        log.info("resumed from %s at step %d", ckpts.directory, latest)
    start = int(state.step)
    if start >= run.steps:
        log.info("already trained to step %d (train.steps=%d)", start, run.steps)

    p_train = train_lib.make_p_train_step(graphdef, optim_cfg)
    p_eval = train_lib.make_p_eval_step(graphdef)
    lr_fn = train_lib.create_learning_rate_fn(optim_cfg)
    rstate = train_lib.replicate(state, devices)
    del state
    samples_per_step = run.batch_size * targets

    def evaluate(params) -> dict:
        batches_ = input_pipeline.eval_batches(
            run.data_dir, receptive_field=rf, per_device_batch=eval_per_device,
            split=run.eval_split, num_devices=len(devices), max_batches=run.eval_batches)
        return train_lib.evaluate(p_eval, params, batches_, model_cfg.num_classes, rf)

    def save(step: int, val_bits: float | None) -> None:
        host = jax.device_get(train_lib.unreplicate(rstate))
        ckpts.save(step, host, {**meta, "step": step, "window": window.to_json(),
                                "history": history}, iterator=batches,
                   metrics={ckpt_lib.BEST_METRIC: val_bits} if val_bits is not None
                   else None)

    bar = _progress(run, start, is_main)
    last_log_step = start - len(window.bits)
    t_window = time.perf_counter()
    step = start
    try:
        with _SigTerm() as sigterm:
            while step < run.steps:
                batch = next(batches)
                rstate, metrics = p_train(rstate, batch)
                window.pending.append(metrics)
                step += 1
                if bar is not None:
                    bar.update(1)
                is_eval = step % run.eval_every == 0 or step == run.steps
                is_ckpt = step % run.checkpoint_every == 0 or step == run.steps
                stop = _agree(sigterm.requested)
                if not (step % run.log_every == 0 or is_eval or is_ckpt or stop):
                    continue
                jax.block_until_ready(rstate.params)
                window.seconds += time.perf_counter() - t_window
                window.flush(last_log_step + len(window.bits) + 1)
                val_bits = None
                if step % run.log_every == 0 or is_eval:
                    record = {"step": step,
                              "train_bits": float(np.mean(window.bits)),
                              "lr": float(lr_fn(step - 1)),
                              "grad_norm": float(np.mean(window.grad_norm)),
                              "samples_per_s": samples_per_step * len(window.bits)
                              / max(window.seconds, 1e-9)}
                    if is_eval:
                        ev = evaluate(rstate.params)
                        val_bits = ev["nll_bits"]
                        record.update(val_bits=val_bits, unigram_bits=ev["unigram_bits"])
                        if rstate.ema_params is not None:
                            record["val_bits_ema"] = evaluate(rstate.ema_params)["nll_bits"]
                        history["unigram_bits"] = ev["unigram_bits"]
                        if history["best_val_bits"] is None or val_bits < history["best_val_bits"]:
                            history.update(best_val_bits=val_bits, best_step=step)
                            is_ckpt = True  # the best is always kept as a checkpoint
                    metrics_log.write(record)
                    _show(bar, record, run, step, t_start)
                    window = _Window()
                    last_log_step = step
                if is_ckpt or stop:
                    save(step, val_bits)
                if stop:
                    log.warning("SIGTERM: saved a checkpoint at step %d; exiting", step)
                    raise Preempted(step)
                t_window = time.perf_counter()
    finally:
        if bar is not None:
            bar.close()
        metrics_log.close()
        ckpts.close()

    rows = read_metrics(workdir) if is_main else []
    evals = [r for r in rows if "val_bits" in r]
    summary = {
        "workdir": os.path.abspath(workdir), "steps": step,
        "final_val_bits": evals[-1]["val_bits"] if evals else None,
        "best_val_bits": history["best_val_bits"], "best_step": history["best_step"],
        "unigram_bits": history["unigram_bits"],
        "final_train_bits": rows[-1]["train_bits"] if rows else None,
        "samples_per_s": float(np.median([r["samples_per_s"] for r in rows]))
        if rows else None,
        "wall_s": round(time.time() - t_start, 1),
        "receptive_field": rf, "checkpoints": ckpts.directory,
        "model": dataclasses.asdict(model_cfg),
    }
    if is_main:
        with open(os.path.join(workdir, "run_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        log.info("%s", format_summary(summary))
    return summary


def _agree(flag: bool) -> bool:
    """True if any process saw the flag (SIGTERM): all processes stop at the same step,
    so none waits in a collective for a peer that is saving. One host all-gather per step
    on multi-process runs; free otherwise."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def _progress(run: RunConfig, start: int, is_main: bool):
    if not (run.progress and is_main):
        return None
    from tqdm import tqdm

    return tqdm(total=run.steps, initial=start, unit="step", dynamic_ncols=True,
                desc="train", smoothing=0.1)


def _show(bar, record: dict, run: RunConfig, step: int, t_start: float) -> None:
    text = {"bits": f"{record['train_bits']:.3f}"}
    if "val_bits" in record:
        text["val"] = f"{record['val_bits']:.3f}"
        text["unigram"] = f"{record['unigram_bits']:.3f}"
    if bar is not None:
        bar.set_postfix(text, refresh=False)
    else:  # a periodic log line with rate and ETA instead of the bar
        rate = record["samples_per_s"]
        log.info("step %d/%d %s, %.0f samples/s", step, run.steps,
                 " ".join(f"{k}={v}" for k, v in text.items()), rate)


def format_summary(s: dict) -> str:
    def f(x):
        return "-" if x is None else f"{x:.3f}"

    return (f"trained {s['steps']} steps in {s['wall_s']:.0f} s "
            f"({f(s['samples_per_s'])} samples/s); validation bits/sample: final "
            f"{f(s['final_val_bits'])}, best {f(s['best_val_bits'])} at step "
            f"{s['best_step']}, unigram baseline {f(s['unigram_bits'])}; checkpoints in "
            f"{s['checkpoints']}")
