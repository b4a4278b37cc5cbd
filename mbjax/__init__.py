"""mbjax: model-based reinforcement learning in JAX.

Everything is a pure function over pytrees: environments, replay buffers, learned
models and planners compose inside one ``jax.jit``-compiled program.
"""

from mbjax._xla import configure_xla_flags

configure_xla_flags()

__version__ = "0.1.0"
