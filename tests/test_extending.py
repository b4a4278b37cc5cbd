"""docs/extending.md is correct: its python code blocks run, in order, as one script."""

import re
import time
from pathlib import Path

import pytest

import mbjax.envs as envs
from mbjax.envs import registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def code_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


@pytest.fixture
def clean_registry():
    before = set(envs.names())
    yield
    for name in set(envs.names()) - before:  # the doc registers its example envs
        registry._REGISTRY.pop(name, None)
        registry._DESCRIPTIONS.pop(name, None)


@pytest.mark.slow  # > 8 s: kept out of the quick loop (CI runs it)
def test_extending_guide_runs(clean_registry):
    blocks = code_blocks(DOC)
    assert len(blocks) >= 6, "expected the env, reward, planner, model and training blocks"
    namespace = {"__name__": "extending_guide"}
    start = time.perf_counter()
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name}[block {i}]", "exec"), namespace)  # noqa: S102
    # The guide's own asserts check the reward_fn and that MPC beats the random policy;
    # here: every piece was really used.
    assert {"point_mass", "point_mass_stop"} <= set(envs.names())
    assert namespace["mpc_return"] > namespace["random_return"] + 10
    assert namespace["metrics"]["return_mean"].shape == (2,)
    assert time.perf_counter() - start < 300  # ~30 s on an idle 2-core CPU
