"""orbax checkpoints: round trip, shape/config mismatch and corrupt files fail clearly."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbjax import checkpoint
from mbjax.checkpoint import CheckpointError
from mbjax.models import (
    EnsembleConfig,
    EnsembleModel,
    ModelTrainConfig,
    load_model,
    make_model_trainer,
    save_model,
)


def _trained(tmp_path, hidden=(16,)):
    model = EnsembleModel(3, 1, EnsembleConfig(num_members=2, num_elites=1,
                                               hidden_sizes=hidden, weight_decay=()))
    trainer = make_model_trainer(model, ModelTrainConfig(batch_size=8, max_epochs=2))
    return model, trainer, trainer.init(jax.random.PRNGKey(0))


def test_model_round_trip(tmp_path):
    model, trainer, state = _trained(tmp_path)
    state = state.replace(elites=jnp.array([1], jnp.int32))
    save_model(tmp_path / "m", model, state)
    loaded = load_model(tmp_path / "m", model, trainer.init(jax.random.PRNGKey(1)))
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(loaded)):
        np.testing.assert_array_equal(a, b)


def test_loading_into_other_shape_names_the_leaf(tmp_path):
    model, trainer, state = _trained(tmp_path)
    save_model(tmp_path / "m", model, state)
    other, other_trainer, other_state = _trained(tmp_path, hidden=(32,))
    with pytest.raises(CheckpointError, match=r"hidden_sizes: checkpoint \[16\], expected \[32\]"):
        load_model(tmp_path / "m", other, other_state)
    # Without the config check the schema check still names the differing leaf.
    with pytest.raises(CheckpointError, match=r"layers\[0\].*\(2, 4, 16\).*\(2, 4, 32\)"):
        checkpoint.load(tmp_path / "m", other_state)


def test_missing_and_corrupt_checkpoints(tmp_path):
    model, trainer, state = _trained(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_model(tmp_path / "absent", model, state)
    save_model(tmp_path / "m", model, state)
    shutil.rmtree(tmp_path / "m" / "record")
    with pytest.raises(CheckpointError, match="not a complete mbjax checkpoint"):
        load_model(tmp_path / "m", model, state)
    save_model(tmp_path / "c", model, state)
    for f in (tmp_path / "c" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path / "c", model, state)


def test_overwrite_keeps_a_loadable_checkpoint(tmp_path):
    model, trainer, state = _trained(tmp_path)
    save_model(tmp_path / "m", model, state)
    state2 = state.replace(elites=jnp.array([1], jnp.int32))
    save_model(tmp_path / "m", model, state2)
    loaded = load_model(tmp_path / "m", model, state)
    assert int(loaded.elites[0]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp dirs left behind
    with pytest.raises(CheckpointError, match="exists"):
        checkpoint.save(tmp_path / "m", state, overwrite=False)


def test_zero_size_leaves_round_trip(tmp_path):
    """orbax refuses zero-size arrays; they are stored as empty nodes and come back as
    zeros of the template's shape (None nodes of the tree stay None)."""
    tree = {"w": jnp.arange(3.0), "act": jnp.zeros((4, 0)), "none": None,
            "i": jnp.int32(2), "nested": (jnp.zeros((0,), jnp.int32), jnp.ones((2, 2)))}
    checkpoint.save(tmp_path / "c", tree)
    template = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
    loaded = checkpoint.load(tmp_path / "c", template)
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(tree)
    for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(loaded)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
        np.testing.assert_array_equal(a, b)


@pytest.mark.mjx
@pytest.mark.slow  # compiles an MJX Hopper (~20-40 s on 2 cores)
def test_mjx_env_state_round_trip(tmp_path):
    """A brax Hopper (MJX backend) state has a zero-size ``act``: it saves and restores."""
    import mbjax.envs as envs

    env = envs.make("hopper")
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    assert any(np.size(x) == 0 for x in jax.tree_util.tree_leaves(state))
    checkpoint.save(tmp_path / "env", state)
    loaded = checkpoint.load(tmp_path / "env", state)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(loaded)):
        np.testing.assert_array_equal(a, b)
