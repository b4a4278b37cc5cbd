"""Timing helpers, machine descriptions and plot styling shared by ``benchmarks/`` scripts
and the report plots of ``mbjax.jobs.diagnostics``."""

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


def git_state(repo: str | os.PathLike | None = None) -> str:
    """The code state to store beside a result: HEAD (short) plus the tracked ``.py``
    files under ``mbjax/`` with uncommitted changes ("unknown" outside a git checkout;
    untracked files are not recorded)."""
    import subprocess
    from pathlib import Path

    cwd = Path(repo) if repo is not None else Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=cwd, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no",
                                "--", "mbjax"], capture_output=True, text=True,
                               cwd=cwd, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = [p for p in dirty if p.endswith(".py")]
    return head + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")


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


def style_axes(ax, *, xlabel: str | None = None, ylabel: str | None = None,
               title: str | None = None, xlog: float | None = None, ylog: float | None = None,
               grid: bool = True, legend: float | None = None, legend_cols: int = 1) -> None:
    """Scales, labels, title, grid and legend of one matplotlib ``Axes``, in one call.

    Args:
      xlog, ylog: base of a logarithmic x / y axis (e.g. 2 or 10); None leaves it linear.
      xlabel, ylabel, title: set where given.
      grid: a light grid on the major and minor ticks (``alpha=0.3``).
      legend: font size of the legend; None draws none. ``legend_cols``: its columns.
    """
    if xlog is not None:
        ax.set_xscale("log", base=xlog)
    if ylog is not None:
        ax.set_yscale("log", base=ylog)
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    if grid:
        ax.grid(True, which="both", alpha=0.3)
    if legend is not None:
        ax.legend(fontsize=legend, ncol=legend_cols)


def save_figure(fig, path, suptitle: str | None = None) -> None:
    """Optional figure title (font size 10), tight layout, PNG at 110 dpi, figure closed."""
    import matplotlib.pyplot as plt

    if suptitle is not None:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
