"""How much device memory a compiled program needs, and whether it fits: checked before a
run starts, so a run that cannot fit fails in seconds with a message, not in an
out-of-memory crash after minutes of compilation and prefill.

XLA reports a compiled program's buffers (``Compiled.memory_analysis()``): arguments,
outputs, temporaries, and the bytes of outputs aliased to donated arguments. A call holds

    peak = arguments + outputs - aliased + temporaries

(per device for a sharded program). The memory the device offers is its allocator's limit
(``Device.memory_stats()["bytes_limit"]``, e.g. XLA's default 75 % of a GPU), or on a CPU
the host memory still available (``/proc/meminfo`` MemAvailable).
"""

from __future__ import annotations

import dataclasses

import jax

GIB = float(1 << 30)


@dataclasses.dataclass(frozen=True)
class ProgramMemory:
    """Bytes of one call of a compiled program (``memory_analysis``)."""

    arguments: int
    outputs: int
    aliased: int
    temporaries: int

    @property
    def peak(self) -> int:
        """arguments + outputs - aliased + temporaries."""
        return self.arguments + self.outputs - self.aliased + self.temporaries


def program_memory(compiled) -> ProgramMemory:
    """The buffers of a ``jax.stages.Compiled`` (``jitted.lower(*args).compile()``)."""
    m = compiled.memory_analysis()
    if m is None:
        raise RuntimeError("this backend reports no memory analysis for compiled programs")
    return ProgramMemory(arguments=int(m.argument_size_in_bytes),
                         outputs=int(m.output_size_in_bytes),
                         aliased=int(m.alias_size_in_bytes),
                         temporaries=int(m.temp_size_in_bytes))


def available_bytes(device=None) -> int | None:
    """Memory a program may use on ``device`` (default: this process's first device; under
    multi-process runs only a process's own devices report memory): the allocator's
    ``bytes_limit`` minus what is in use, or for a CPU the host's MemAvailable; None when
    neither is known."""
    device = device or jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except (AttributeError, RuntimeError):  # JaxRuntimeError is a RuntimeError
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    if device.platform == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_fits(needs: dict[str, ProgramMemory], available: int | None, advice: str,
               headroom: float = 0.9) -> None:
    """Raises ``MemoryError`` if the largest program of ``needs`` (name -> memory) needs
    more than ``headroom`` x ``available`` bytes; the message names each program's peak,
    the device's memory and ``advice`` (what to change). No-op if ``available`` is None."""
    if available is None:
        return
    name, worst = max(needs.items(), key=lambda kv: kv[1].peak)
    if worst.peak <= headroom * available:
        return
    parts = ", ".join(f"{k} {v.peak / GIB:.2f} GiB" for k, v in needs.items())
    raise MemoryError(
        f"this run needs {worst.peak / GIB:.2f} GiB on {jax.devices()[0].device_kind} "
        f"({name}: arguments {worst.arguments / GIB:.2f} + outputs "
        f"{worst.outputs / GIB:.2f} - donated {worst.aliased / GIB:.2f} + temporaries "
        f"{worst.temporaries / GIB:.2f} GiB; {parts}) but {available / GIB:.2f} GiB are "
        f"free (using at most {headroom:.0%}). {advice}")
