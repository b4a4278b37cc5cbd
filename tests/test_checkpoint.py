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


def test_background_checkpointer_returns_before_the_write_and_saves_a_copy(tmp_path,
                                                                         monkeypatch):
    """``save`` returns while the write is still blocked; what is written is the state at
    the call (not the buffers changed afterwards); ``wait`` re-raises a failed write."""
    import threading

    release, started = threading.Event(), threading.Event()
    real_save = checkpoint.save_checkpoint

    def slow_save(*args, **kwargs):
        started.set()
        assert release.wait(30), "the test never released the write"
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_checkpoint", slow_save)
    host = np.arange(6, dtype=np.float32)
    state = {"x": host, "y": jnp.ones((2, 3))}
    with checkpoint.BackgroundCheckpointer() as writer:
        writer.save(tmp_path / "checkpoints", 1, state, {"run": "a"})
        assert started.wait(30) and not (tmp_path / "checkpoints").exists()  # not written yet
        host[:] = -1.0  # the caller reuses its buffer while the write waits
        release.set()
    loaded = checkpoint.load_latest(tmp_path, {"x": np.zeros(6, np.float32),
                                               "y": jnp.zeros((2, 3))}, {"run": "a"})
    np.testing.assert_array_equal(loaded["x"], np.arange(6, dtype=np.float32))
    np.testing.assert_array_equal(loaded["y"], np.ones((2, 3)))

    monkeypatch.setattr(checkpoint, "save_checkpoint", real_save)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    writer = checkpoint.BackgroundCheckpointer()
    writer.save(blocker / "checkpoints", 1, state, {})  # returns; the write fails later
    with pytest.raises(OSError):
        writer.close()
    assert not checkpoint.BackgroundCheckpointer(enabled=False).background
