"""mbjax.utils.memory: a compiled program's buffers, and the fits-or-fails check."""

import jax
import jax.numpy as jnp
import pytest

from mbjax.utils.memory import ProgramMemory, available_bytes, check_fits, program_memory

MIB = 1 << 20


def test_program_memory_counts_arguments_outputs_and_donation():
    x = jax.ShapeDtypeStruct((1024, 256), jnp.float32)  # 1 MiB
    plain = program_memory(jax.jit(lambda x: x * 2).lower(x).compile())
    assert plain.arguments == MIB and plain.outputs == MIB and plain.aliased == 0
    assert plain.peak >= 2 * MIB
    donated = program_memory(jax.jit(lambda x: x * 2, donate_argnums=0).lower(x).compile())
    assert donated.aliased == MIB and donated.peak == plain.peak - MIB


def test_check_fits_names_the_program_and_the_advice():
    needs = {"init": ProgramMemory(MIB, MIB, 0, 0),
             "train_iteration": ProgramMemory(3 * MIB, 3 * MIB, 3 * MIB, 2 * MIB)}
    check_fits(needs, 100 * MIB, "advice")  # 5 MiB of 100: fits
    check_fits(needs, None, "advice")  # unknown free memory: no check
    with pytest.raises(MemoryError, match=r"needs 0\.00 GiB .*\(train_iteration: .*lower "
                                          r"num_envs"):
        check_fits(needs, 5 * MIB, "lower num_envs")  # 5 MiB > 90 % of 5 MiB


def test_available_bytes_is_positive_on_this_host():
    free = available_bytes()
    assert free is None or free > 16 * MIB
