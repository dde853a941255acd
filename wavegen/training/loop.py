"""The training loop: the one place that owns logging, checkpoints, signals and processes.

`train_and_evaluate(model_cfg, optim_cfg, data, run, workdir)` trains data-parallel on
every local device (jax.pmap), evaluates, checkpoints and resumes; the steps it calls are
the pure functions of `wavegen.training.steps`. It is five parts: set-up (`_set_up`: the
dataset opened once, every setting checked before the first step), resume (`_start`),
the step loop (`_train`), evaluation and checkpointing at log points (`_log_point`,
`_save`), and the summary (`_summarize`). It writes into `workdir`:

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
saves a checkpoint and exits with status 143 (one arriving before the session's first step
has nothing new to save, and exits so at once). A batch that cannot fit the machine's
memory is refused at set-up (`wavegen.training.resources`). A non-finite loss stops the run naming the
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

from wavegen.data import input_pipeline
from wavegen.data.dataset import Dataset, open_dataset
from wavegen.errors import UserError
from wavegen.model import wavenet as model_lib
from wavegen.progress import progress_bar
from wavegen.training import checkpoints as ckpt_lib
from wavegen.training import metrics as run_metrics
from wavegen.training import resources
from wavegen.training import run_dir as run_lib
from wavegen.training import steps as train_lib

log = logging.getLogger("wavegen.train")


class TrainingError(UserError):
    """A run that cannot start or continue; the message is one clear line."""


class NonFiniteLoss(TrainingError):
    pass


class Preempted(SystemExit):
    """SIGTERM: a checkpoint was saved; exit status 143 (128 + SIGTERM)."""

    def __init__(self, step: int):
        super().__init__(143)
        self.step = step


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The dataset a run reads (Hydra's `data.*` keys)."""

    dir: str  # a directory written by `python -m beam_pipelines.preprocess`
    train_split: str = "train"
    eval_split: str = "validation"
    shuffle_buffer: int = 512

    def __post_init__(self):
        if not isinstance(self.shuffle_buffer, int) or self.shuffle_buffer < 1:
            raise TrainingError(f"data.shuffle_buffer must be >= 1, got "
                                f"{self.shuffle_buffer!r}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The run's knobs besides the model, the optimizer and the data (Hydra's `train.*`)."""

    steps: int = 10_000
    batch_size: int = 16  # global, over every device of every process
    seed: int = 0
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    eval_batches: int | None = None  # per evaluation; None: the whole split
    eval_batch_size: int | None = None  # global; None: batch_size
    targets: int | None = None  # scored targets per example; None: the chunk's
    resume: bool | None = None  # None: resume when workdir has checkpoints
    device_count: int | None = None  # None: every local device
    progress: bool = True
    distributed: bool = False
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    max_minutes: float | None = None  # time budget (wall clock, resumes included); None: none

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "eval_every", "checkpoint_every",
                     "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise TrainingError(f"train.{name} must be >= 1, got "
                                    f"{getattr(self, name)}")
        for name in ("eval_batches", "eval_batch_size", "targets", "device_count",
                     "num_processes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainingError(f"train.{name} must be >= 1 or null, got {value}")
        if self.process_id is not None and self.process_id < 0:
            raise TrainingError(f"train.process_id must be >= 0 or null, got "
                                f"{self.process_id}")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes)
                                                 and self.max_minutes > 0):
            raise TrainingError(f"train.max_minutes must be a positive number of minutes or "
                                f"null, got {self.max_minutes}")

    @property
    def global_eval_batch(self) -> int:
        return self.eval_batch_size or self.batch_size


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
                       ("eval_batch_size", run.global_eval_batch)):
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
        theirs = stored.get(key, {})
        if key == "optim":
            theirs = ckpt_lib.upgraded_optim(theirs)
        diff = _differences(theirs, meta[key])
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
        self.path = run_metrics.metrics_path(workdir)
        self._tb = None
        if enabled:
            import tensorflow as tf

            self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """On resume: drop lines logged after the restored step (they are redone), and any
        line a kill cut short."""
        if self.enabled:
            run_metrics.truncate_after(self.path, step)

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
    """The run's well-formed metrics rows (wavegen.training.metrics)."""
    return run_metrics.read_metrics(run_metrics.metrics_path(workdir))


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


@dataclasses.dataclass
class _Setup:
    """What set-up decided, fixed for the whole run."""

    model_cfg: model_lib.ModelConfig  # filled from the dataset
    optim_cfg: train_lib.OptimConfig  # filled for the run's steps
    data: DataConfig
    run: RunConfig
    dataset: Dataset
    window: input_pipeline.Window
    devices: list
    meta: dict  # the JSON every checkpoint carries
    ckpts: ckpt_lib.Checkpoints
    workdir: str
    is_main: bool
    t_start: float
    graphdef: object = None  # the model's static graph, made with the state (`_start`)

    @property
    def total_devices(self) -> int:
        return len(self.devices) * jax.process_count()


@dataclasses.dataclass
class _Progress:
    """What the loop changes: the replicated state and the bookkeeping around it."""

    rstate: train_lib.TrainState
    batches: input_pipeline.BatchIterator
    step: int
    window: _Window
    history: dict
    last_log_step: int
    spent_before: float = 0.0  # seconds earlier sessions of this run spent (budget)
    stopped_by: str = "steps"  # or "budget"

    def spent(self, setup: "_Setup") -> float:
        return self.spent_before + time.time() - setup.t_start

    def out_of_time(self, setup: "_Setup") -> bool:
        budget = setup.run.max_minutes
        return budget is not None and self.spent(setup) >= 60.0 * budget


def train_and_evaluate(model_cfg: model_lib.ModelConfig, optim_cfg: train_lib.OptimConfig,
                       data: DataConfig, run: RunConfig, workdir: str) -> dict:
    """Trains (or resumes) one run in `workdir`; returns the final summary."""
    # SIGTERM is turned into a flag from the start: one arriving during set-up (opening
    # the dataset, restoring) ends the run before its first step, with nothing to save.
    with _SigTerm() as sigterm:
        setup = _set_up(model_cfg, optim_cfg, data, run, workdir)
        try:
            progress = _start(setup)
        except BaseException:
            setup.ckpts.close()
            raise
        metrics_log = _MetricsLog(workdir, setup.is_main)
        if progress.step > 0:
            metrics_log.truncate_after(progress.step)
        bar = _progress_bar(run, progress.step, setup.is_main)
        try:
            _train(setup, progress, metrics_log, bar, sigterm)
        finally:
            if bar is not None:
                bar.close()
            metrics_log.close()
            setup.ckpts.close()
    return _summarize(setup, progress)


def _set_up(model_cfg, optim_cfg, data: DataConfig, run: RunConfig, workdir: str) -> _Setup:
    """Opens the dataset once and checks every setting against it, before any step."""
    t_start = time.time()
    if run.distributed:
        init_distributed(run)
    devices = pick_devices(run)
    try:
        dataset = open_dataset(data.dir)
        try:
            model_cfg = model_lib.for_dataset(model_cfg, dataset.spec)
        except ValueError as e:  # its refusals of a model that does not fit the dataset
            raise TrainingError(str(e)) from e
        window = input_pipeline.Window(dataset.spec, model_lib.receptive_field(model_cfg),
                                       run.targets)
        dataset.check_splits(data.train_split, data.eval_split)
    except UserError as e:  # DatasetError and model/dataset mismatches; bugs keep theirs
        raise TrainingError(str(e)) from e
    per_device = run.batch_size // (len(devices) * jax.process_count())
    per_device_eval = run.global_eval_batch // (len(devices) * jax.process_count())
    resources.check_training_fits(
        model_cfg, devices, batch_size=run.batch_size, eval_batch_size=run.global_eval_batch,
        per_device_batch=per_device, train_length=window.train_length,
        per_device_eval_batch=per_device_eval, eval_length=window.eval_length)
    os.makedirs(workdir, exist_ok=True)
    stream = {"batch_size": run.batch_size, "seed": run.seed,
              "targets": window.train_targets, "shuffle_buffer": data.shuffle_buffer,
              "train_split": data.train_split, "devices": len(devices) * jax.process_count()}
    # The settings as given (null schedule lengths follow train.steps), so a resumed run
    # may change train.steps: its schedule is then laid over the new length.
    meta = ckpt_lib.run_meta(model_cfg, dataset.spec, optim=dataclasses.asdict(optim_cfg),
                             stream=stream, data=dataclasses.asdict(data),
                             ema=optim_cfg.ema_decay > 0)
    optim_cfg = optim_cfg.for_run(run.steps)
    ckpts = ckpt_lib.Checkpoints(os.path.join(workdir, run_lib.CHECKPOINTS),
                                 run.keep_checkpoints)
    _check_resume(ckpts, run, meta)
    return _Setup(model_cfg, optim_cfg, data, run, dataset, window, devices, meta, ckpts,
                  workdir, jax.process_index() == 0, t_start)


def _check_resume(ckpts: ckpt_lib.Checkpoints, run: RunConfig, meta: dict) -> None:
    latest = ckpts.latest_step()
    if run.resume is True and latest is None:
        raise TrainingError(f"train.resume=true but {ckpts.directory} holds no checkpoint")
    if run.resume is False and latest is not None:
        raise TrainingError(f"{ckpts.directory} already holds checkpoints (latest step "
                            f"{latest}); resume (train.resume=true or unset) or use a new "
                            "hydra.run.dir")
    if latest is not None:
        check_same_run(ckpts.meta(latest), meta, ckpts.directory)


def _start(setup: _Setup) -> _Progress:
    """A fresh state and data stream, or both restored from the latest checkpoint."""
    run, data = setup.run, setup.data
    graphdef, state = train_lib.create_train_state(setup.model_cfg, setup.optim_cfg,
                                                   seed=run.seed)
    setup.graphdef = graphdef
    batches = input_pipeline.train_batches(
        setup.dataset, setup.window, per_device_batch=run.batch_size // setup.total_devices,
        seed=run.seed, shuffle_buffer=data.shuffle_buffer, split=data.train_split,
        num_devices=len(setup.devices))
    window, history = _Window(), {"best_val_bits": None, "best_step": None,
                                  "unigram_bits": None}
    spent_before = 0.0
    latest = setup.ckpts.latest_step()
    if latest is not None:
        state, stored = setup.ckpts.restore(latest, state, iterator=batches)
        window = _Window(**stored.get("window", {}))
        history.update(stored.get("history", {}))
        spent_before = float(stored.get("spent_s", 0.0))
        log.info("resumed from %s at step %d", setup.ckpts.directory, latest)
    step = int(state.step)
    if step >= run.steps:
        log.info("already trained to step %d (train.steps=%d)", step, run.steps)
    return _Progress(rstate=train_lib.replicate(state, setup.devices), batches=batches,
                     step=step, window=window, history=history,
                     last_log_step=step - len(window.bits), spent_before=spent_before)


def _train(setup: _Setup, progress: _Progress, metrics_log: _MetricsLog, bar,
           sigterm: _SigTerm) -> None:
    """The step loop: steps until train.steps, the time budget (then ends as at
    train.steps) or SIGTERM; logs, evaluates and saves at its log points."""
    run = setup.run
    budget_s = None if run.max_minutes is None else 60.0 * run.max_minutes
    if progress.step < run.steps and _agree(budget_s is not None
                                            and progress.spent_before >= budget_s)[0]:
        progress.stopped_by = "budget"
        log.info("the time budget (train.max_minutes=%g) was spent by earlier sessions",
                 run.max_minutes)
        return
    if _agree(sigterm.requested)[0]:
        log.warning("SIGTERM before the first step of this session: nothing new to save "
                    "(step %d); exiting", progress.step)
        raise Preempted(progress.step)
    p_train = train_lib.make_p_train_step(setup.graphdef, setup.optim_cfg)
    evaluator = _Evaluator(setup)
    t_window = time.perf_counter()
    while progress.step < run.steps:
        progress.rstate, metrics = p_train(progress.rstate, next(progress.batches))
        progress.window.pending.append(metrics)
        progress.step += 1
        if budget_s is not None and len(progress.window.pending) > 1:
            # Keep one step in flight, not a log window's worth: the clock must see
            # the work done, or the budget is overrun by the queued steps' time.
            jax.block_until_ready(progress.window.pending[-2])
        if bar is not None:
            bar.update(1)
        step = progress.step
        stop, budget_end = _agree(sigterm.requested, progress.out_of_time(setup))
        end = step == run.steps or budget_end
        is_eval = step % run.eval_every == 0 or end
        is_ckpt = step % run.checkpoint_every == 0 or end
        if not (step % run.log_every == 0 or is_eval or is_ckpt or stop):
            continue
        jax.block_until_ready(progress.rstate.params)
        progress.window.seconds += time.perf_counter() - t_window
        progress.window.flush(progress.last_log_step + len(progress.window.bits) + 1)
        val_bits = None
        if step % run.log_every == 0 or is_eval:
            val_bits = _log_point(setup, progress, evaluator, metrics_log, bar, is_eval)
            is_ckpt = is_ckpt or progress.history["best_step"] == step  # keep the best
        if is_ckpt or stop:
            _save(setup, progress, val_bits)
        if stop:
            log.warning("SIGTERM: saved a checkpoint at step %d; exiting", step)
            raise Preempted(step)
        if budget_end:
            progress.stopped_by = "budget"
            log.info("time budget of %g minutes spent at step %d", run.max_minutes, step)
            return
        t_window = time.perf_counter()


class _Evaluator:
    """Scores parameters on the evaluation split (one pmapped eval step for the run)."""

    def __init__(self, setup: _Setup):
        self.setup = setup
        self.p_eval = train_lib.make_p_eval_step(setup.graphdef)

    def __call__(self, params) -> dict:
        s = self.setup
        batches = input_pipeline.eval_batches(
            s.dataset, s.window, per_device_batch=s.run.global_eval_batch // s.total_devices,
            split=s.data.eval_split, num_devices=len(s.devices),
            max_batches=s.run.eval_batches)
        return train_lib.evaluate(self.p_eval, params, batches)


def _log_point(setup: _Setup, progress: _Progress, evaluator: _Evaluator,
               metrics_log: _MetricsLog, bar, is_eval: bool) -> float | None:
    """Writes the metrics line of this step (with an evaluation if due); returns the
    validation bits used to rank checkpoints, or None without an evaluation."""
    step, window, history = progress.step, progress.window, progress.history
    lr_fn = train_lib.create_learning_rate_fn(setup.optim_cfg)
    record = {"step": step, "train_bits": float(np.mean(window.bits)),
              "lr": float(lr_fn(step - 1)), "grad_norm": float(np.mean(window.grad_norm)),
              "samples_per_s": setup.run.batch_size * setup.window.train_targets
              * len(window.bits) / max(window.seconds, 1e-9)}
    val_bits = None
    if is_eval:
        ev = evaluator(progress.rstate.params)
        record.update(val_bits=ev["nll_bits"], unigram_bits=ev["unigram_bits"])
        if progress.rstate.ema_params is not None:
            record["val_bits_ema"] = evaluator(progress.rstate.ema_params)["nll_bits"]
        # "Best" is judged on the parameters sampling will use: the EMA when kept.
        val_bits = record[best_metric(setup.meta)]
        history["unigram_bits"] = ev["unigram_bits"]
        if history["best_val_bits"] is None or val_bits < history["best_val_bits"]:
            history.update(best_val_bits=val_bits, best_step=step)
    metrics_log.write(record)
    _show(bar, record, setup.run, step)
    progress.window = _Window()
    progress.last_log_step = step
    return val_bits


def best_metric(meta: dict) -> str:
    """The metrics.jsonl key checkpoints are ranked by: the EMA's when the run keeps one."""
    return "val_bits_ema" if meta.get("ema") else "val_bits"


def _save(setup: _Setup, progress: _Progress, val_bits: float | None) -> None:
    host = jax.device_get(train_lib.unreplicate(progress.rstate))
    meta = {**setup.meta, "step": progress.step, "window": progress.window.to_json(),
            "history": progress.history, "spent_s": progress.spent(setup)}
    setup.ckpts.save(progress.step, host, meta, iterator=progress.batches,
                     metrics=None if val_bits is None else {ckpt_lib.BEST_METRIC: val_bits})


def _summarize(setup: _Setup, progress: _Progress) -> dict:
    """run_summary.json (process 0) and the returned summary."""
    rows = read_metrics(setup.workdir) if setup.is_main else []
    evals = [r for r in rows if "val_bits" in r]
    history = progress.history
    summary = {
        "workdir": os.path.abspath(setup.workdir), "steps": progress.step,
        "final_val_bits": evals[-1]["val_bits"] if evals else None,
        "final_val_bits_ema": evals[-1].get("val_bits_ema") if evals else None,
        "best_val_bits": history["best_val_bits"], "best_step": history["best_step"],
        "best_by": best_metric(setup.meta), "unigram_bits": history["unigram_bits"],
        "stopped_by": progress.stopped_by, "max_minutes": setup.run.max_minutes,
        "final_train_bits": rows[-1]["train_bits"] if rows else None,
        "samples_per_s": float(np.median([r["samples_per_s"] for r in rows]))
        if rows else None,
        "wall_s": round(time.time() - setup.t_start, 1),
        "receptive_field": setup.window.receptive_field,
        "checkpoints": setup.ckpts.directory,
        "model": dataclasses.asdict(setup.model_cfg),
    }
    if setup.is_main:
        with open(os.path.join(setup.workdir, "run_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        log.info("%s", format_summary(summary))
    return summary


def _agree(*flags: bool) -> tuple[bool, ...]:
    """Each flag true if any process saw it (SIGTERM, budget spent): all processes stop at
    the same step, so none waits in a collective for a peer that is saving. One host
    all-gather per step on multi-process runs; free otherwise."""
    if jax.process_count() == 1:
        return tuple(bool(f) for f in flags)
    from jax.experimental import multihost_utils

    seen = np.asarray(multihost_utils.process_allgather(np.array(flags)))
    return tuple(bool(x) for x in seen.reshape(-1, len(flags)).any(axis=0))


def _progress_bar(run: RunConfig, start: int, is_main: bool):
    return progress_bar("train", "step", run.steps, run.progress and is_main, initial=start,
                        smoothing=0.1)


def _show(bar, record: dict, run: RunConfig, step: int) -> None:
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

    budget = (f" (stopped by the {s['max_minutes']:g}-minute budget)"
              if s.get("stopped_by") == "budget" else "")
    return (f"trained {s['steps']} steps{budget} in {s['wall_s']:.0f} s "
            f"({f(s['samples_per_s'])} samples/s); validation bits/sample: final "
            f"{f(s['final_val_bits'])}, best {f(s['best_val_bits'])} at step "
            f"{s['best_step']}, unigram baseline {f(s['unigram_bits'])}; checkpoints in "
            f"{s['checkpoints']}")
