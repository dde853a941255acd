"""What a run needs against what the machine has: refused before any work, in one line.

A training batch or a sampling length that cannot fit does not fail fast by itself: the
input pipeline assembles the batch for hours, or the sampler generates for days before
the memory or the disk runs out. The estimates here are lower bounds counted from the
shapes (the activations one step must keep for its backward pass, the batches the input
pipeline holds, the arrays sampling holds, the WAV bytes it writes), so a refusal means
the run could not have finished; a request that passes may still be tight.
"""

from __future__ import annotations

import os
import shutil

from wavegen.errors import UserError
from wavegen.model import wavenet as model_lib

# The input pipeline's batches alive at once: the one being read, the prefetch buffer's
# (input_pipeline.train_batches prefetches 2) and its numpy copy handed to the step.
BATCHES_HELD = 3
INT32_BYTES = 4


class DoesNotFit(UserError):
    """A request that needs more memory or disk than the machine has."""


def available_memory() -> int | None:
    """Bytes of RAM available to a new allocation (MemAvailable of /proc/meminfo, else the
    free physical pages), or None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def device_memory(device) -> int | None:
    """An accelerator's memory limit in bytes (None on CPU, whose memory is the host's, or
    where the backend does not say)."""
    if device.platform == "cpu":
        return None
    try:
        stats = device.memory_stats() or {}
    except Exception:  # backends without memory statistics raise various errors
        return None
    limit = stats.get("bytes_limit")
    return int(limit) - int(stats.get("bytes_in_use", 0)) if limit else None


def free_disk(path: str) -> int | None:
    """Free bytes on the filesystem that holds `path` (or would: its nearest existing
    parent), or None where that cannot be asked."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def size(n: float) -> str:
    """Bytes for people: 1.5 GB, 3.2 TB (powers of 1000)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000.0
    raise AssertionError("unreachable")


def activation_bytes(cfg: model_lib.ModelConfig, batch: int, positions: int,
                     training: bool = True) -> int:
    """At least what one forward pass of `batch` windows of `positions` outputs holds.

    Training keeps, for the backward pass, every layer's input (R channels: its conv's
    weight gradient needs it) and its dilated conv's output (G: the gate's derivative
    needs it; the gated activation can be recomputed from it), and the head's hidden
    layer (S) and outputs (C). Without a backward pass only one layer is alive at a time,
    beside the residual and skip paths (R + S) and the outputs (C).
    """
    itemsize = 2 if cfg.dtype == "bfloat16" else 4
    r, g, s, c = (cfg.residual_channels, cfg.gate_channels, cfg.skip_channels,
                  cfg.out_channels)
    if training:
        per_position = cfg.num_layers * (r + g) + s + c
    else:
        per_position = r + g + g // 2 + r + s + c
    return batch * positions * per_position * itemsize


def training_needs(cfg: model_lib.ModelConfig, per_device_batch: int, train_length: int,
                   per_device_eval_batch: int, eval_length: int,
                   devices: int) -> tuple[int, int]:
    """(bytes per device for a step's activations, host bytes for the input batches)."""
    # The model reads window[:-1]: one output per input sample but the last.
    step = max(activation_bytes(cfg, per_device_batch, train_length - 1),
               activation_bytes(cfg, per_device_eval_batch, eval_length - 1, training=False))
    batches = devices * INT32_BYTES * BATCHES_HELD * max(
        per_device_batch * train_length, per_device_eval_batch * eval_length)
    return step, batches


def check_training_fits(cfg: model_lib.ModelConfig, devices: list, *, batch_size: int,
                        eval_batch_size: int, per_device_batch: int, train_length: int,
                        per_device_eval_batch: int, eval_length: int) -> None:
    """Refuses a batch that cannot fit this machine, naming the settings to lower."""
    step, batches = training_needs(cfg, per_device_batch, train_length,
                                   per_device_eval_batch, eval_length, len(devices))
    accelerator = device_memory(devices[0])
    if accelerator is not None:
        needs = [(step, accelerator, f"of {devices[0].platform} memory per device "
                                     "for one step's activations")]
        needs.append((batches, available_memory(), "of RAM for the input batches"))
    else:  # CPU devices share the host's memory
        needs = [(step * len(devices) + batches, available_memory(),
                  "of memory for one step's activations and the input batches")]
    for need, have, what in needs:
        if have is not None and need > have:
            raise DoesNotFit(
                f"train.batch_size={batch_size} (train.eval_batch_size={eval_batch_size}) "
                f"needs at least {size(need)} {what} (windows of {train_length} samples "
                f"through {cfg.num_layers} layers), but this machine has {size(have)} "
                "available; lower train.batch_size, train.eval_batch_size or train.targets")


def sampling_needs(num_streams: int, length: int) -> tuple[int, int]:
    """(bytes of memory, bytes of WAV files) for sampling `num_streams` x `length`.

    Memory: the generated bins (int32) of every stream, gathered once more into one
    array, and their audio (float32), all held until written; and one stream's float64
    copy for its spectrogram. Disk: 16-bit PCM, 2 bytes a sample.
    """
    memory = num_streams * length * 3 * 4 + length * 8
    return memory, num_streams * length * 2


def check_sampling_fits(num_streams: int, length: int, seconds: float, sample_rate: int,
                        output_dir: str) -> None:
    memory, disk = sampling_needs(num_streams, length)
    what = f"{num_streams} stream(s) of {seconds:g} s at {sample_rate} Hz"
    have = available_memory()
    if have is not None and memory > have:
        raise DoesNotFit(f"seconds={seconds:g}: {what} need at least {size(memory)} of "
                         f"memory to hold, but this machine has {size(have)} available; "
                         "lower seconds or num_samples")
    free = free_disk(output_dir)
    if free is not None and disk > free:
        raise DoesNotFit(f"seconds={seconds:g}: {what} make {size(disk)} of WAV files, but "
                         f"output_dir={output_dir} has {size(free)} free; lower seconds or "
                         "num_samples, or choose another output_dir")
