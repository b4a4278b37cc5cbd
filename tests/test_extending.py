"""docs/extending.md is correct: its python code blocks run, in order, as one script."""

import re
from pathlib import Path

import jax
import pytest

import mbjax.envs as envs
from mbjax.envs import registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def code_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


@pytest.fixture
def clean_registries():
    from mbjax.models import MODELS
    from mbjax.planners import planner_kinds, unregister_planner
    from mbjax.runner import presets

    before = (set(envs.names()), set(planner_kinds()), set(MODELS.names()),
              set(presets.names()))
    yield
    for name in set(envs.names()) - before[0]:  # the doc registers its example envs
        registry._REGISTRY.pop(name, None)
        registry._DESCRIPTIONS.pop(name, None)
    for kind in set(planner_kinds()) - before[1]:
        unregister_planner(kind)
    for kind in set(MODELS.names()) - before[2]:
        MODELS.unregister(kind)
    for name in set(presets.names()) - before[3]:
        presets.PRESETS.pop(name)


def without_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


@pytest.mark.slow  # ~1-2 min: kept out of the quick loop (CI runs it)
def test_extending_guide_runs(clean_registries):
    """A planner and a model defined outside mbjax/ (in the guide) train through the run
    machinery, resume exactly, and sweep with their traced float vmapped."""
    import dataclasses

    from mbjax.runner import read_metrics, run

    blocks = code_blocks(DOC)
    assert len(blocks) >= 6, "expected the env, reward, planner, model and training blocks"
    namespace = {"__name__": "extending_guide"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name}[block {i}]", "exec"), namespace)  # noqa: S102
    assert {"point_mass", "point_mass_stop"} <= set(envs.names())
    # The true-simulator episode with the new planner reaches the goal region: a random
    # policy scores ~5 over 50 steps, standing still at the start ~0.
    assert namespace["mpc_return"] > 20, namespace["mpc_return"]
    # Trained with the linear model: the last iteration's MPC return beats random actions.
    task = envs.make("point_mass_stop")
    env = envs.wrap_for_training(task, episode_length=50, num_envs=8)
    _, data = envs.rollout(env, envs.uniform_random_policy(env),
                           env.reset(jax.random.PRNGKey(4)), jax.random.PRNGKey(5), 50)
    random_return = float(data.reward.sum(0).mean())
    summary = namespace["summary"]
    assert summary["iterations"] == 3
    assert summary["return_last_mean"] > random_return + 10, (summary, random_return)
    # Stopped after 2 iterations and resumed == one uninterrupted run.
    config = namespace["config"]
    out = namespace["out"]
    run(dataclasses.replace(config, run_name="straight"))
    assert without_time(namespace["rows"]) == without_time(read_metrics(f"{out}/straight"))
    # The sweep: one program, the two planner stds give different returns.
    results = namespace["results"]
    assert [r["point"] for r in results] == ["std=0.2", "std=0.8"]
    assert results[0]["return_mean"] != results[1]["return_mean"]


def test_extending_guide_lists_every_builtin_planner():
    """The planner table of docs/extending.md names every registered built-in kind."""
    from mbjax.planners import planner_kinds, planner_spec

    builtin = {k for k in planner_kinds()
               if planner_spec(k).__module__.startswith("mbjax.planners")}
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", DOC.read_text(), flags=re.M))
    assert len(builtin) >= 7 and builtin <= listed, builtin - listed
