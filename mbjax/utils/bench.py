"""Timing helpers and machine descriptions shared by ``benchmarks/`` scripts."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import jax


def machine_info() -> dict:
    """Device, host and library versions to store beside every benchmark result."""
    dev = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "device_kind": dev.device_kind,
        "platform": dev.platform,
        "num_devices": jax.device_count(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def time_call(fn: Callable[[], object], repeats: int = 3) -> tuple[float, float]:
    """Runs ``fn`` once (compile + run) and then ``repeats`` times.

    Returns (first_call_seconds, median_seconds_of_the_repeats); results are waited
    for with ``jax.block_until_ready``.
    """
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)
