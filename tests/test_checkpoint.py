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
