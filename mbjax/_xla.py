"""XLA flags that mbjax sets for CPU runs, before JAX creates its backend.

Why (measured on a 2-core CPU with jaxlib 0.10.x, see DEVELOPERS notes):

* ``--xla_cpu_enable_concurrency_optimized_scheduler=false``: with the default
  scheduler, batched ``mjx.step`` (batch 64-256) hangs now and then with every
  XLA worker parked at 0 % CPU; bisection found this flag removes the hang.
* ``--xla_cpu_experimental_ynn_fusion_type=`` (empty; jax issue 39257): roughly
  halves MJX compile times on CPU.

Both flags only affect the CPU backend, so they are harmless on GPU/TPU. They are
appended to ``XLA_FLAGS`` unless the user already set the same flag, and not at all
when ``MBJAX_NO_XLA_FLAGS=1``. XLA reads ``XLA_FLAGS`` when the first backend is
created, so importing mbjax before running any JAX computation is enough.
"""

from __future__ import annotations

import os

CPU_FLAGS: dict[str, str] = {
    "--xla_cpu_enable_concurrency_optimized_scheduler": "false",
    "--xla_cpu_experimental_ynn_fusion_type": "",
}


def configure_xla_flags(environ: dict | None = None) -> str:
    """Appends mbjax's CPU flags to ``XLA_FLAGS`` (in ``environ``), returns the result."""
    environ = os.environ if environ is None else environ
    current = environ.get("XLA_FLAGS", "")
    if environ.get("MBJAX_NO_XLA_FLAGS") == "1":
        return current
    parts = current.split()
    for flag, value in CPU_FLAGS.items():
        if not any(p.split("=", 1)[0] == flag for p in parts):
            parts.append(f"{flag}={value}")
    environ["XLA_FLAGS"] = " ".join(parts)
    return environ["XLA_FLAGS"]
