"""The result tables of the experiment READMEs, rendered from the committed result files.

Every table in ``experiments/**/README.md`` that shows numbers from a results file sits
between marker comments::

    <!-- table:NAME -->
    ...generated, do not edit...
    <!-- /table -->

and is rendered here from the JSON/CSV/JSONL under ``experiments/*/results/`` (nothing is
run or trained; only files are read). Each table ends with (or, for the MPC results,
starts with) the file it comes from and the machine and code state recorded in it.

    python experiments/tables.py           # rewrite every table in the READMEs
    python experiments/tables.py --check   # exit 1, listing the tables that differ
    python experiments/tables.py --list    # README, marker and source of every table

The MPC results tables are rendered by ``experiments/mpc/run_all.py``'s own
``markdown()`` (the generator of ``results/results.md``), so they are not duplicated here.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import re
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MINUS = "\u2212"
BEGIN = "<!-- table:{} -->"
END = "<!-- /table -->"
MARKER_RE = re.compile(r"<!-- table:([A-Za-z0-9_.-]+) -->")


# -------------------------------------------------------------------------------------
# Reading and formatting
# -------------------------------------------------------------------------------------


@cache
def load(rel: str):
    """A JSON (or JSON-lines, for ``*.jsonl``) file under experiments/."""
    text = (HERE / rel).read_text()
    if rel.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def num(x: float, spec: str = ".0f") -> str:
    """``x`` formatted with ``spec``, a typographic minus for negatives."""
    return format(x, spec).replace("-", MINUS)


def pm(mean: float, std: float, spec: str = ".0f") -> str:
    return f"{num(mean, spec)} ± {num(std, spec)}"


def seeds_list(values, spec: str = ".0f") -> str:
    return ", ".join(num(v, spec) for v in values)


def steps_list(values) -> str:
    """Env steps per seed; None = never reached."""
    if all(v is None for v in values):
        return "never"
    return ", ".join("never" if v is None else str(v) for v in values)


def span(values, scale: float = 1.0, unit: str = "") -> str:
    lo, hi = min(values) / scale, max(values) / scale
    return f"{lo:g}{unit}" if lo == hi else f"{lo:g}–{hi:g}{unit}"


def bold(text: str, on: bool = True) -> str:
    return f"**{text}**" if on else text


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    line = lambda cells: "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"  # noqa: E731
    return [line(header), "|" + "---|" * len(header)] + [line(r) for r in rows]


def machine(m: dict) -> str:
    """The machine recorded by ``mbjax.utils.bench.machine_info()``."""
    return (f"{m['cpu']}, {m['cpu_count']} cores, device {m['device_kind']}, "
            f"jax {m['jax']}")


def code_state(m: dict) -> str:
    git = m.get("git")
    return f"`{git}`" if git else "not recorded in the file"


def source(readme_dir: str, *files: str, machine_text: str, code: str) -> str:
    """The provenance line under a table: files (relative to the README), machine, code."""
    links = ", ".join(f"[`{f[len(readme_dir) + 1:]}`]({f[len(readme_dir) + 1:]})"
                      for f in files)
    return f"Source: {links}; machine: {machine_text}; code state: {code}."


# -------------------------------------------------------------------------------------
# Registry
# -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Table:
    readme: str  # relative to experiments/
    marker: str
    sources: tuple[str, ...]  # result files, relative to experiments/
    render: Callable[[], str]


TABLES: list[Table] = []


def table_of(readme: str, marker: str, source_file: str):
    """``table`` for a renderer of ONE result file: it is called with the file's data and
    its path, ``fn(data, path)``."""
    def register(fn: Callable[[dict, str], str]) -> Callable[[dict, str], str]:
        TABLES.append(Table(readme, marker, (source_file,),
                            lambda: fn(load(source_file), source_file)))
        return fn
    return register


def table(readme: str, marker: str, *sources: str):
    def register(fn: Callable[[], str]) -> Callable[[], str]:
        TABLES.append(Table(readme, marker, sources, fn))
        return fn

    return register


# -------------------------------------------------------------------------------------
# experiments/mbpo
# -------------------------------------------------------------------------------------

MBPO = "mbpo"


def _mbpo_source(*files: str) -> str:
    m = load(files[0])["machine"]
    return source(MBPO, *files, machine_text=machine(m), code=code_state(m))


def mbpo_markdown(header: list[str], rows: list[list[str]], source_file: str) -> str:
    """A table of an MBPO result file with its source line under it."""
    return "\n".join(md_table(header, rows) + ["", _mbpo_source(source_file)])


def _agent_label(cfg: dict) -> str:
    g = cfg["updates_per_step"]
    if cfg["model_based"]:
        return f"MBPO (G = {g}, {cfg['real_ratio'] * 100:g} % real)"
    return f"SAC, G = {g}" + (" (SAC's own rate)" if g == 1 else ", real data only")


@table_of("mbpo/README.md", "mbpo-vs-sac", "mbpo/results/mbpo_vs_sac.json")
def mbpo_vs_sac(d: dict, f: str) -> str:
    res = d["results"]
    key = next(k for k in next(iter(res.values())) if re.fullmatch(r"return_at_\d+_steps", k))
    at = int(re.search(r"\d+", key).group())
    best = max(res, key=lambda k: res[k][key]["mean"])
    rows = []
    for name, r in res.items():
        ret = f"{pm(r[key]['mean'], r[key]['std'])} ({seeds_list(r[key]['per_seed'])})"
        if r["env_steps"][-1] != at:
            ret += (f"; at {r['env_steps'][-1]}: "
                    f"{pm(r['final_return']['mean'], r['final_return']['std'])}")
        rows.append([_agent_label(r["config"]), bold(ret, name == best),
                     bold(steps_list(r["steps_to_threshold"]), name == best),
                     f"{r['time']['iteration_median_s']:.2g}"])
    header = ["agent", f"return at {at} env steps (mean ± std, {len(d['seeds'])} seeds; "
              "per seed)", f"env steps to ≥ {num(d['threshold'])} (per seed)",
              "median s / epoch"]
    return mbpo_markdown(header, rows, f)


@table_of("mbpo/README.md", "mbpo-start-modes", "mbpo/results/start_modes.json")
def mbpo_start_modes(d: dict, f: str) -> str:
    res = d["results"]
    steps = {r["env_steps"][-1] for r in res.values()}
    best = max(res, key=lambda k: res[k]["final_return"]["mean"])
    rows = [[label, bold(pm(r["final_return"]["mean"], r["final_return"]["std"]), label == best),
             num(r["best_return_mean"]), steps_list(r["steps_to_threshold"]),
             seeds_list(r["metrics"]["sac/q_mean"][-1])]
            for label, r in res.items()]
    header = ["start mode", f"final return ({'/'.join(map(str, sorted(steps)))} steps)",
              "best epoch (mean)", f"steps to ≥ {num(d['threshold'])}",
              "final mean Q (per seed)"]
    return mbpo_markdown(header, rows, f)


@table_of("mbpo/README.md", "mbpo-distillation", "mbpo/results/distillation.json")
def mbpo_distillation(d: dict, f: str) -> str:
    rows = []
    for label, r in d["results"].items():
        e, t = r["final_eval"], r["time_per_action"]
        ratio = e["return_ratio_student_over_teacher"]
        mse = np.mean(r["per_iteration"]["student/heldout_action_mse"][-1])
        rows.append([label.replace("-", " "),
                     pm(e["teacher_return_mean"], e["teacher_return_std"]),
                     pm(e["student_return_mean"], e["student_return_std"]),
                     f"{ratio:.2f} ({(ratio - 1) * 100:.0f} % more cost)",
                     f"{t['teacher_s'] * 1e3:.1f} ms → {t['student_s'] * 1e3:.3f} ms "
                     f"(**{t['speedup']:.0f}x**)", f"{mse:.3f}"])
    header = ["teacher", "teacher return", "student return", "student / teacher return",
              "s / action teacher → student (batch 1)",
              f"held-out label MSE, last iteration (mean of {len(d['seeds'])} seeds)"]
    return mbpo_markdown(header, rows, f)


@table_of("mbpo/README.md", "mbpo-terminal-value", "mbpo/results/terminal_value.json")
def mbpo_terminal_value(d: dict, f: str) -> str:
    rows = d["results"]
    columns = list(dict.fromkeys((r["dynamics"], r["terminal_value"]) for r in rows))
    horizons = sorted({r["horizon"] for r in rows})
    cell = {(r["dynamics"], r["terminal_value"], r["horizon"]): r for r in rows}
    best = {c: max(horizons, key=lambda h: cell[c + (h,)]["return_mean"]) for c in columns}
    body = [[str(h)] + [bold(pm(cell[c + (h,)]["return_mean"], cell[c + (h,)]["return_std"]),
                             best[c] == h) for c in columns] for h in horizons]
    header = ["H"] + [f"{dyn}, {'with V' if v else 'no V'}" for dyn, v in columns]
    sac = d["sac_policy_alone"]
    n = len(sac["returns"])
    return "\n".join(md_table(header, body) + [
        "", f"Mean ± std over {n} episodes; bold: the best horizon of each column. SAC "
        f"policy alone (deterministic) from the same starts: "
        f"{pm(sac['return_mean'], sac['return_std'])}.", "", _mbpo_source(f)])


@table_of("mbpo/README.md", "mbpo-brax-locomotion", "mbpo/results/brax_locomotion.json")
def mbpo_brax_locomotion(d: dict, f: str) -> str:
    rows = []
    for env, by_agent in d["results"].items():
        for agent in ("mbpo", "sac"):
            r = by_agent[agent]
            s = r["summary"]
            cfg = r["config"]
            g = cfg["updates_per_step"]
            label = (f"MBPO (G = {g}, {cfg['real_ratio'] * 100:g} % real)"
                     if cfg["model_based"] else f"SAC (G = {g})")
            to_sac = (steps_list(by_agent["mbpo_steps_to_sac_final"]["per_seed"])
                      if agent == "mbpo" and "mbpo_steps_to_sac_final" in by_agent else "—")
            rows.append([env, label, f"{s['env_steps'] / 1000:g}k",
                         f"{pm(s['final']['mean'], s['final']['std'])} "
                         f"({seeds_list(s['final']['per_seed'])})",
                         pm(s["last3_mean"]["mean"], s["last3_mean"]["std"]),
                         num(s["curve_mean"]["mean"]), to_sac,
                         f"{r['iteration_median_s']:.0f}"])
    n = {len(a["seeds"]) for e in d["results"].values() for k, a in e.items() if k in
         ("mbpo", "sac")}
    header = ["env", "agent", "env steps",
              f"final return (mean ± std over {'/'.join(map(str, sorted(n)))} seeds; per seed)",
              "last 3 epochs", "mean over all epochs", "steps to SAC's final return",
              "s / epoch"]
    return mbpo_markdown(header, rows, f)


# -------------------------------------------------------------------------------------
# experiments/mpc
# -------------------------------------------------------------------------------------

MPC = "mpc"
MPC_RESULTS = "mpc/results/results.json"


@cache
def run_all():
    """experiments/mpc/run_all.py as a module (its ``markdown`` renders the tables)."""
    spec = importlib.util.spec_from_file_location("mpc_run_all", HERE / "mpc" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _mpc_machine() -> dict:
    """The machine shared by every run of results.json (all but the git state must agree)."""
    d = load(MPC_RESULTS)
    strip = lambda m: {k: v for k, v in m.items() if k != "git"}  # noqa: E731
    machines = [strip(e.get("machine", d["machine"])) for e in d["experiments"]]
    if any(m != strip(d["machine"]) for m in machines):
        raise ValueError(f"{MPC_RESULTS}: the runs recorded different machines; the tables "
                         "would need one machine line per run")
    return d["machine"]


@table("mpc/README.md", "mpc-results", MPC_RESULTS)
def mpc_results() -> str:
    d = load(MPC_RESULTS)
    m = dict(_mpc_machine(), git="one per run, see the code-state table below")
    return ("Source: [`results/results.json`](results/results.json), rendered by "
            "`run_all.markdown` (the same tables as `results/results.md`).\n\n"
            + run_all().markdown(d["experiments"], m))


@table("mpc/README.md", "mpc-code-state", MPC_RESULTS)
def mpc_code_state() -> str:
    d = load(MPC_RESULTS)
    groups: dict[str | None, list[str]] = {}
    for e in d["experiments"]:
        groups.setdefault(e.get("machine", {}).get("git"), []).append(e["name"])
    rows = []
    for git, names in groups.items():
        if git is None:
            state = "not recorded (this run's entry has no `git` field)"
        elif " + uncommitted changes to " in git:
            head, files = git.split(" + uncommitted changes to ", 1)
            files = [x.strip() for x in files.split(",")]
            state = (f"commit `{head}` **plus uncommitted changes** to {len(files)} "
                     f"file{'s' * (len(files) > 1)}: " + ", ".join(f"`{x}`" for x in files))
        else:
            state = f"commit `{git}`, no uncommitted changes to tracked `mbjax/*.py` files"
        rows.append([", ".join(f"`{n}`" for n in names), state])
    top = d["machine"].get("git")
    return "\n".join(md_table(["runs (rows of the tables above)", "code state"], rows) + [
        "", f"Source: [`results/results.json`](results/results.json), each run's "
        f"`machine.git` (written by `mbjax.utils.bench.git_state()`: HEAD plus the tracked "
        f"`.py` files under `mbjax/` with uncommitted changes; untracked files are not "
        f"recorded). The file's top-level `machine.git` (`{top}`) is only the state of its "
        f"last write."])


def _fits(name: str) -> list[dict]:
    return load(f"mpc/results/per_run/{name}/metrics.jsonl")


@table("mpc/README.md", "mpc-model-epochs", MPC_RESULTS, "mpc/results/per_run/*/metrics.jsonl")
def mpc_model_epochs() -> str:
    d = load(MPC_RESULTS)
    rows, totals = [], {}
    for e in d["experiments"]:
        if e["method"] not in ("PETS", "PDDM"):
            continue
        t = e["config"]["model_train"]
        fits = [r for r in _fits(e["name"]) if "model/epochs" in r]
        short = [r for r in fits if r["model/epochs"] < t["max_epochs"]]
        which = "; ".join(f"it. {r['iteration']} seed {r['seed']}: {r['model/epochs']:.0f}"
                          for r in short) or "—"
        stop = f"on (patience {t['patience']})" if t["early_stopping"] else "off"
        rows.append([f"`{e['name']}`", stop, str(t["max_epochs"]), str(len(fits)),
                     str(len(short)), which])
        key = (e["method"], t["early_stopping"])
        n, s = totals.get(key, (0, 0))
        totals[key] = (n + len(fits), s + len(short))
    summary = "; ".join(
        f"early stopping {'on' if on else 'off'}: " + ", ".join(
            f"{method} {s} of {n}" for (method, o), (n, s) in totals.items() if o == on)
        for on in dict.fromkeys(o for _, o in totals))
    header = ["run", "early stopping", "max epochs", "fits (iterations × seeds)",
              "stopped early", "epochs of those fits"]
    return "\n".join(md_table(header, rows) + [
        "", f"Fits that stopped early, in total: {summary}.", "",
        "Source: `model/epochs` of every row of `results/per_run/<run>/metrics.jsonl` "
        "(one model fit per iteration and seed) and the runs' `model_train` configs in "
        "[`results/results.json`](results/results.json); machine as in the results below; "
        "code state: per run, in the code-state table under Results."])


@table_of("mpc/README.md", "mpc-planner-sweep", "mpc/results/planner_sweep_reacher-pddm.json")
def mpc_planner_sweep(d: dict, f: str) -> str:
    run = Path(d["run_dir"]).name
    planner = next(e for e in load(MPC_RESULTS)["experiments"]
                   if e["name"] == run)["config"]["planner"]
    settings = d["settings"]
    best = max(range(len(settings)), key=lambda i: settings[i]["return_mean"])
    rows = []
    for i, s in enumerate(settings):
        mine = s["kappa"] == planner["kappa"] and s["sigma"] == planner["sigma"]
        rows.append([f"{s['kappa']:g}", f"{s['sigma']:.1f}" + (" (the run's)" if mine else ""),
                     bold(pm(s["return_mean"], s["return_std"], ".1f"), i == best)])
    n = {len(s["returns_per_seed"]) for s in settings}
    header = ["κ", "σ", f"return (mean ± std over {'/'.join(map(str, n))} seeds, "
              f"{d['episodes_per_seed']} episodes each)"]
    m = d["machine"]
    return "\n".join(md_table(header, rows) + [
        "", f"Source: [`results/{Path(f).name}`](results/{Path(f).name}) (the final models, "
        f"iteration {d['iteration']}, of the `{run}` run; {d['wall_s']:.0f} s for all "
        f"settings); machine: {machine(m)}; code state: not recorded in the file (the "
        f"models come from `{run}`, whose code state is in the table above)."])


# -------------------------------------------------------------------------------------
# experiments/pddm_hand
# -------------------------------------------------------------------------------------

HAND = "pddm_hand"
HAND_RESULTS = "pddm_hand/results"
DROP = -250.0  # an episode with a drop scores below -drop_penalty / 2 (run.py's rule)


def _hand_source(*files: str) -> str:
    devices = list(dict.fromkeys(load(f)["device"] for f in files if f.endswith(".json")))
    return source(HAND, *files, machine_text=" / ".join(devices) + " (as recorded; the "
                  "hand files record no jax version)", code="not recorded in the files")


def _run_config(run_dir: str) -> dict:
    return load(f"{HAND_RESULTS}/{Path(run_dir).name}/config.json")


def _episodes_dropped(run_dir: str) -> dict[int, tuple[int, int]]:
    """iteration -> (episodes with a drop, episodes), from the run's metrics.jsonl: per
    seed row, return_min / return_max over its episodes (exact for 2 hands per seed)."""
    hands = _run_config(run_dir)["num_envs"] * _run_config(run_dir)["episodes_per_iteration"]
    if hands != 2:
        raise ValueError(f"{run_dir}: drop counts per episode need 2 episodes per seed")
    out: dict[int, tuple[int, int]] = {}
    for r in load(f"{HAND_RESULTS}/{Path(run_dir).name}/metrics.jsonl"):
        n, total = out.get(r["iteration"], (0, 0))
        out[r["iteration"]] = (n + (r["return_min"] < DROP) + (r["return_max"] < DROP),
                               total + hands)
    return out


def _parked_return() -> tuple[float, str]:
    """hand_track with the ball parked at the circle's centre: distance = radius every
    step, i.e. -w_d * R * episode length (the task's defaults)."""
    import inspect

    from mbjax.envs.hand.tasks import HandTrack

    p = inspect.signature(HandTrack.__init__).parameters
    w, r, t = p["distance_weight"].default, p["radius"].default, HandTrack.default_episode_length
    return -w * r * t, f"−w_d · R · T = −{w:g} · {r:g} m · {t}"


@table("pddm_hand/README.md", "hand-track-baselines", f"{HAND_RESULTS}/baselines-hand_track.json",
       f"{HAND_RESULTS}/main-cpu-hand_track.json")
def hand_track_baselines() -> str:
    fb, fm = f"{HAND_RESULTS}/baselines-hand_track.json", f"{HAND_RESULTS}/main-cpu-hand_track.json"
    b, main = load(fb), load(fm)["rows"][0]
    parked, formula = _parked_return()
    length = b["episode_length_limit"]
    rows = [[f"random policy ({b['episodes']} episodes)",
             f"{pm(b['random']['return_mean'], b['random']['return_std'], '.1f')} (the ball "
             f"drops after {b['random']['length_mean']:.0f} steps on average)"],
            [f"hold still, a = 0 ({b['episodes']} episodes)",
             f"{pm(b['hold_still']['return_mean'], b['hold_still']['return_std'], '.1f')} "
             f"(mean length {b['hold_still']['length_mean']:.0f})"],
            ["ball parked at the circle's centre (distance = radius)",
             f"{num(parked, 'g')} ({formula}, the task's defaults)"],
            [f"**PDDM, learned model, last 3 of {main['iterations']} iterations "
             f"({main['seeds']} seeds)**",
             f"**{pm(main['return_last3_mean'], main['return_last3_std_over_seeds'], '.1f')}** "
             f"(first iteration {num(main['return_first_iteration'], '.1f')})"]]
    return "\n".join(md_table(["", f"return ({length} steps)"], rows)
                     + ["", _hand_source(fb, fm)])


ABLATIONS = ("planner", "horizon", "model_size", "ensemble")


def _ablation_label(which: str, label: str, cfg: dict) -> str:
    p, m = cfg["planner"], cfg["model"]
    if which == "planner":
        if p["kind"] == "random_shooting":
            return "random shooting (best of N)"
        if p["kind"] == "cem":
            return f"CEM ({p['num_elites']} elites, {p['iterations']} iterations)"
        if label.startswith("no filter"):
            return f"no temporal filter (β {p['beta']:g})"
        if label.startswith("no reward weighting"):
            return f"no reward weighting (κ {p['kappa']:g}: plain average of the candidates)"
        return f"PDDM (β {p['beta']:g}, κ {p['kappa']:g})"
    if which == "horizon":
        return f"H {p['horizon']}"
    if which == "model_size":
        return " × ".join(map(str, [len(m["hidden_sizes"]), m["hidden_sizes"][0]]))
    n = m["num_members"]
    return f"{n} member{'s' * (n != 1)}"


def _ablation_key(which: str, cfg: dict):
    return {"planner": 0, "horizon": cfg["planner"]["horizon"],
            "model_size": cfg["model"]["hidden_sizes"][0],
            "ensemble": cfg["model"]["num_members"]}[which]


@table("pddm_hand/README.md", "hand-ablations",
       *(f"{HAND_RESULTS}/ablation-{w}-cpu-hand_track.json" for w in ABLATIONS))
def hand_ablations() -> str:
    files = [f"{HAND_RESULTS}/ablation-{w}-cpu-hand_track.json" for w in ABLATIONS]
    main_dir = load(f"{HAND_RESULTS}/main-cpu-hand_track.json")["rows"][0]["run_dir"]
    rows = []
    for which, f in zip(ABLATIONS, files):
        variants = load(f)["rows"]
        variants = sorted(variants, key=lambda r: _ablation_key(which, _run_config(r["run_dir"])))
        for i, r in enumerate(variants):
            ref = r["run_dir"] == main_dir
            rows.append([which.replace("_", " ") if i == 0 else "",
                         bold(_ablation_label(which, r["variant"], _run_config(r["run_dir"])), ref),
                         bold(pm(r["return_last3_mean"], r["return_last3_std_over_seeds"], ".1f"),
                              ref),
                         num(r["return_best_iteration"], ".1f"),
                         f"{r['seed_iterations_with_drop']} / {r['seed_iterations']}",
                         f"{r['seconds_per_iteration']:.0f}"])
    header = ["ablation", "variant", "last 3", "best it.", "drops", "s / it."]
    return "\n".join(md_table(header, rows) + [
        "", "Bold: the reference variant, the main run above (`results/"
        f"{Path(main_dir).name}/`). s / it.: median wall time of an iteration.", "",
        _hand_source(*files)])


@table("pddm_hand/README.md", "hand-baoding", f"{HAND_RESULTS}/baselines-hand_baoding.json",
       f"{HAND_RESULTS}/true-dynamics-hand_baoding-N*.json",
       f"{HAND_RESULTS}/main-cpu-hand_baoding.json")
def hand_baoding() -> str:
    fb = f"{HAND_RESULTS}/baselines-hand_baoding.json"
    fm = f"{HAND_RESULTS}/main-cpu-hand_baoding.json"
    ftrue = sorted(str(p.relative_to(HERE)) for p in
                   (HERE / HAND_RESULTS).glob("true-dynamics-hand_baoding-N*.json"))
    b, main = load(fb), load(fm)
    row = main["rows"][0]
    curve = main["curves"][row["variant"]]
    length = b["episode_length_limit"]
    rows = [[f"random policy ({b['episodes']} episodes)",
             pm(b["random"]["return_mean"], b["random"]["return_std"], ".1f"),
             f"most (mean length {b['random']['length_mean']:.0f} of {length})"],
            [f"hold still, a = 0 ({b['episodes']} episodes)",
             pm(b["hold_still"]["return_mean"], b["hold_still"]["return_std"], ".1f"),
             f"few (mean length {b['hold_still']['length_mean']:.0f} of {length})"]]
    for f in sorted(ftrue, key=lambda f: -load(f)["sigma"]):
        t = load(f)
        if t["num_envs"] != 2:
            raise ValueError(f"{f}: drop counts need 2 episodes")
        dropped = (t["return_min"] < DROP) + (t["return_max"] < DROP)
        rows.append([f"MPPI on the true simulator, N {t['population']}, H {t['horizon']}, "
                     f"σ {t['sigma']:g} ({t['num_envs']} episodes)", num(t["return_mean"], ".1f"),
                     f"{dropped} of {t['num_envs']}"])
    drops = _episodes_dropped(row["run_dir"])
    clean = [i for i, n in zip(curve["iteration"], curve["seeds_with_drop"]) if n == 0]
    if clean:
        its = (f"{clean[0]}–{clean[-1]}" if clean == list(range(clean[0], clean[-1] + 1))
               else ", ".join(map(str, clean)))
        ret = ", ".join(num(curve["return_mean"][curve["iteration"].index(i)], ".1f")
                        for i in clean)
        rows.append([f"**PDDM, learned model, iterations {its} (those without a drop; "
                     f"{row['seeds']} seeds)**", f"**{ret}**",
                     f"0 of {drops[clean[0]][1]} each"])
    last = curve["iteration"][-3:]
    n, total = (sum(drops[i][k] for i in last) for k in (0, 1))
    with_drop = [curve["seeds_with_drop"][curve["iteration"].index(i)] for i in last]
    rows.append([f"PDDM, learned model, last 3 of {row['iterations']} iterations "
                 f"({row['seeds']} seeds)",
                 pm(row["return_last3_mean"], row["return_last3_std_over_seeds"], ".1f"),
                 f"{n} of {total} (seeds with a drop per iteration: "
                 + ", ".join(f"{k} of {row['seeds']}" for k in with_drop) + ")"])
    header = ["", f"return ({length} steps)", "episodes with a drop"]
    return "\n".join(md_table(header, rows) + [
        "", "Drops: an episode scoring below −250 (half the drop penalty), counted from each "
        f"seed's `return_min` / `return_max` in `results/{Path(row['run_dir']).name}/"
        "metrics.jsonl` (2 hands per seed).", "", _hand_source(fb, *ftrue, fm)])


def _baoding_source(d: dict, f: str) -> str:
    return source("pddm_hand", f, machine_text=machine(d["machine"]),
                  code=f"`{d['code']}`")


@table_of("pddm_hand/README.md", "baoding-probe", f"{HAND_RESULTS}/baoding-probe.json")
def baoding_probe(d: dict, f: str) -> str:
    """``baoding.py probe``: the rotation a 1 s open-loop plan that maximises it achieves."""
    header = ["direction", "wrist cost w", "rotation in 1 s (turns), per start",
              "mean", "half-turns completed", "drops", "mean wrist target (rad)"]
    rows = []
    for v in d["variants"]:
        st = v["starts"]
        rows.append(["counter-clockwise" if v["direction"] > 0 else "clockwise",
                     num(v["wrist_cost"], "g"),
                     ", ".join(num(r["rotation_turns"], ".2f") for r in st),
                     num(v["rotation_mean"], ".2f"),
                     num(sum(r["half_turns"] for r in st), ".0f"),
                     f"{sum(r['dropped'] > 0 for r in st)} of {len(st)}",
                     num(float(np.mean([r["mean_wrist_target_rad"] for r in st])), ".2f")])
    p = d["planner"]
    return "\n".join(md_table(header, rows) + [
        "", f"Planner: mbjax CEM, {p['population']} sequences × {p['iterations']} iterations, "
        f"{p['num_elites']} elites, {p['parameterization']} splines with {p['num_knots']} "
        f"knots over {d['steps']} control steps ({d['seconds']:g} s), rolled out on native "
        "MuJoCo; each plan executed open loop on the MJX task env, which measured the "
        "rotation.", "", _baoding_source(d, f)])


@table_of("pddm_hand/README.md", "baoding-mpc", f"{HAND_RESULTS}/baoding-mpc.json")
def baoding_mpc(d: dict, f: str) -> str:
    """``baoding.py mpc``: closed-loop true-dynamics MPC on the tracking reward."""
    header = ["reward", "planner", "return (100 steps)", "rotation (turns)",
              "half-turns", "steps on target", "drops", "wall s"]
    rows = [[r["task"], r["planner"], num(r["return_mean"], ".1f"),
             num(r["rotation"], ".2f"), num(r["half_turns"], ".1f"),
             f"{r['on_target'] * 100:.0f} %", num(r["dropped"], ".1f"),
             num(r["wall_s"], ".0f")] for r in d["rows"]]
    hands = d["rows"][0]["hands"]
    return "\n".join(md_table(header, rows) + [
        "", f"Each row: {hands} hands × 1 episode (means over the hands); a perfect tracker "
        "turns the pair once per episode. Drops: fraction of episodes with a drop.", "",
        _baoding_source(d, f)])


CUBE_RUN = f"{HAND_RESULTS}/pddm-hand-cpu-hand_cube-seed0"


def _run_rows(run: str) -> dict[int, list[dict]]:
    """A run's metrics.jsonl grouped by iteration (one row per seed)."""
    out: dict[int, list[dict]] = {}
    for line in (HERE / run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        out.setdefault(r["iteration"], []).append(r)
    return out


@table("pddm_hand/README.md", "hand-cube", f"{HAND_RESULTS}/baselines-hand_cube.json",
       f"{HAND_RESULTS}/true-dynamics-hand_cube-N64-sigma0.9.json",
       f"{CUBE_RUN}/metrics.jsonl", f"{CUBE_RUN}/summary.json")
def hand_cube() -> str:
    """Cube reorientation: success (final error < 0.3 rad, no drop), final error, drops."""
    fb = f"{HAND_RESULTS}/baselines-hand_cube.json"
    ft = f"{HAND_RESULTS}/true-dynamics-hand_cube-N64-sigma0.9.json"
    b, t = load(fb), load(ft)
    row = lambda label, m, ret: [label, f"{m['success'] * 100:.0f} %",  # noqa: E731
                                 num(m["final_error"], ".2f"), num(m["start_error"], ".2f"),
                                 f"{m['dropped'] * 100:.0f} %", num(ret, ".1f")]
    rows = [row(f"random policy ({b['episodes']} episodes)", b["random"]["measures"],
                b["random"]["return_mean"]),
            row(f"hold still, a = 0 ({b['episodes']} episodes)", b["hold_still"]["measures"],
                b["hold_still"]["return_mean"]),
            row(f"MPPI on the true simulator (MJX), N {t['population']}, H {t['horizon']} "
                f"({t['num_envs']} episodes)", t["measures"], t["return_mean"])]
    its = _run_rows(CUBE_RUN)
    mean = lambda rs, k: float(np.mean([r[k] for r in rs]))  # noqa: E731
    for label, sel in (("first iteration", [min(its)]), ("last 3 iterations", sorted(its)[-3:])):
        rs = [r for i in sel for r in its[i]]
        m = {k: mean(rs, f"task/{k}") for k in ("success", "final_error", "start_error",
                                                "dropped")}
        rows.append(row(f"PDDM, learned model, {label} ({len(its[sel[0]])} seeds)", m,
                        mean(rs, "return_mean")))
    header = ["", "success", "final error (rad)", "start error (rad)", "episodes with a drop",
              "return (100 steps)"]
    summary = load(f"{CUBE_RUN}/summary.json")
    return "\n".join(md_table(header, rows) + [
        "", "Success: the cube ends its episode less than 0.3 rad (17°) from the target "
        "orientation without a drop (`HandCube.episode_measures`); the targets are "
        "π/4–π/2 from the start about a random axis.", "",
        source("pddm_hand", fb, ft, f"{CUBE_RUN}/metrics.jsonl",
               machine_text=machine(summary["machine"]),
               code=f"baselines `{b['code']}`, simulator `{t['code']}`, PDDM "
                    f"`{summary['code']}`")])


@table_of("pddm_hand/README.md", "cube-hold-still", f"{HAND_RESULTS}/cube-hold-still-native.json")
def cube_hold_still(d: dict, f: str) -> str:
    """Hold-still drops of the cube: MJX (the baselines) vs native MuJoCo."""
    rows = [["MJX (`run.py baselines`)", f"{d['mjx_hold_still_dropped_fraction'] * 100:.0f} %"],
            ["native MuJoCo, same scene and start-state sampler",
             f"{d['native_dropped_fraction'] * 100:.0f} %"]]
    return "\n".join(md_table([f"hand held still, {d['episodes']} episodes × "
                                f"{d['control_steps']} steps", "episodes with a drop"], rows)
                      + ["", source("pddm_hand", f, f"{HAND_RESULTS}/{Path(d['mjx_source']).name}",
                                    machine_text=machine(d["machine"]),
                                    code=f"`{d['code']}`")])


@table_of("pddm_hand/README.md", "cube-scene-variants",
          f"{HAND_RESULTS}/cube-scene-variants.json")
def cube_scene_variants(d: dict, f: str) -> str:
    """MJX hold-still drops of the cube per scene variant (solver iterations, cube, cone)."""
    rows = [[str(v["iterations"]), v["cube"], v["cone"],
             f"{round(v['dropped_fraction'] * d['episodes'])} of {d['episodes']}",
             num(v["lowest_centre_m"] * 1000, ".0f")] for v in d["variants"]]
    header = ["Newton iterations", "cube geometry", "friction cone", "starts that drop the cube",
              "lowest cube centre (mm)"]
    return "\n".join(md_table(header, rows) + [
        "", f"The still hand (a = 0) on MJX, {d['episodes']} starts × {d['control_steps']} "
        "control steps; the palm's top is at 211 mm, a resting cube's centre ~231 mm, the "
        "floor-level cube's 22 mm.", "",
        source("pddm_hand", f, machine_text=machine(d["machine"]), code=f"`{d['code']}`")])


BAODING_TURN_RUN = f"{HAND_RESULTS}/pddm-hand-baoding-turn-cpu"


@table("pddm_hand/README.md", "baoding-pddm-turn", f"{BAODING_TURN_RUN}/metrics.jsonl",
       f"{BAODING_TURN_RUN}/config.json", f"{BAODING_TURN_RUN}/summary.json")
def baoding_pddm_turn() -> str:
    """PDDM (learned model) on the "turn" reward, per iteration, means over the seeds."""
    rows_by_it = _run_rows(BAODING_TURN_RUN)
    cfg = load(f"{BAODING_TURN_RUN}/config.json")
    mean = lambda rs, k: float(np.mean([r[k] for r in rs]))  # noqa: E731
    header = ["iteration", "env steps", "return", "rotation (turns)", "half-turns",
              "episodes with a drop", "model holdout MSE"]
    rows = [[str(it), str(rs[0]["env_steps"]), num(mean(rs, "return_mean"), ".1f"),
             num(mean(rs, "task/rotation"), ".2f"), num(mean(rs, "task/half_turns"), ".1f"),
             f"{mean(rs, 'task/dropped') * 100:.0f} %", num(mean(rs, "model/holdout_mse"), ".3f")]
            for it, rs in sorted(rows_by_it.items())]
    p = cfg["planner"]
    seeds = len(next(iter(rows_by_it.values())))
    lines = md_table(header, rows) + [
        "", f"Means over {seeds} seeds × {cfg['num_envs']} hands; planner {p['kind']} "
        f"N {p['population']} × {p['iterations']} it., H {p['horizon']}, "
        f"{p['parameterization']} splines ({p['num_knots']} knots); env options "
        f"`{cfg['env']['options']}`.", ""]
    summary = load(f"{BAODING_TURN_RUN}/summary.json")
    lines.append(source("pddm_hand", f"{BAODING_TURN_RUN}/metrics.jsonl",
                        f"{BAODING_TURN_RUN}/summary.json",
                        machine_text=machine(summary["machine"]), code=f"`{summary['code']}`"))
    return "\n".join(lines)


CLAIMS_COMPARE = f"{HAND_RESULTS}/claims-compare-hand_track.json"
CLAIMS_GOALS = f"{HAND_RESULTS}/claims-goals-hand_track.json"


def _budget(preset: str, cfg: dict) -> str:
    """A few words on a hand preset's compute: model, planner or SAC updates."""
    m = cfg.get("model", {})
    hidden = "×".join(str(h) for h in m.get("hidden_sizes", []))
    ens = (f"{m.get('num_members')} × {hidden} "
           f"{'prob.' if m.get('probabilistic') else 'det.'} ensemble")
    if preset.startswith(("pddm", "pets")):
        p, o = cfg["planner"], cfg["objective"]
        return (f"{ens}; {p['kind'].upper()} N {p['population']}, H {p['horizon']}, "
                f"{o['num_particles']} particles")
    sac = f"SAC {'×'.join(str(h) for h in cfg['sac']['hidden_sizes'])}, G {cfg['updates_per_step']}"
    if preset.startswith("sac"):
        return sac
    return f"{ens}; {sac}; {cfg['rollouts_per_step']} model rollouts per step"


@table_of("pddm_hand/README.md", "hand-claims-compare", CLAIMS_COMPARE)
def hand_claims_compare(d: dict, f: str) -> str:
    """PDDM vs PETS vs MBPO vs SAC on hand_track at equal env steps (3 seeds)."""
    rows = []
    for label, m in d["methods"].items():
        r = np.asarray(m["returns_per_seed"])  # [iterations, seeds]
        meas = {k: np.asarray(v) for k, v in m["measures_per_seed"].items()}
        last3 = slice(-3, None)
        secs = [s for s in m["iteration_s"][1:] if s is not None]
        rows.append([label, _budget(m["preset"], m["config"]), str(m["env_steps"][-1]),
                     num(r[0].mean(), ".1f"), pm(r[-1].mean(), r[-1].std(), ".1f"),
                     num(r[last3].mean(), ".1f"),
                     f"{meas['on_target'][last3].mean() * 100:.0f} %",
                     f"{meas['dropped'][last3].mean() * 100:.0f} %",
                     num(float(np.median(secs)) if secs else float("nan"), ".0f")])
    header = ["", "CPU budget (preset)", "env steps", "return, 1st it. (600 steps)",
              "return at the end (mean ± std, seeds)", "last 3 it.",
              "steps on target, last 3 it.", "episodes with a drop, last 3 it.", "s / it."]
    return "\n".join(md_table(header, rows) + [
        "", "Return: PDDM and PETS, the episodes their planner collects in the iteration "
        "(2 hands per seed); MBPO and SAC, 5 deterministic-policy episodes after it. On "
        "target: the ball within 1 cm of the moving target. Presets: "
        + ", ".join(f"`{m['preset']}`" for m in d["methods"].values()) + ".", "",
        source("pddm_hand", f, machine_text=machine(d["machine"]), code=f"`{d['code']}`")])


@table_of("pddm_hand/README.md", "hand-claims-goals", CLAIMS_GOALS)
def hand_claims_goals(d: dict, f: str) -> str:
    """Goals swapped at test time: the circle-trained PDDM model on other goals."""
    cell = lambda e: "not run" if e is None else (  # noqa: E731
        f"{num(e['return_mean'], '.1f')} ({seeds_list(e['returns_per_seed'], '.1f')})")
    on = lambda e: "" if e is None or "measures" not in e else (  # noqa: E731
        f", {e['measures']['on_target'] * 100:.0f} % on target")
    rows = []
    for label, g in d["goals"].items():
        own = g.get("own_model")
        rows.append([label, f"`{g['options']}`" if g["options"] else "(defaults)",
                     cell(g["circle_model"]) + on(g["circle_model"]),
                     "= the column before" if not g["options"] else cell(own) + on(own),
                     f"{num(g['true_dynamics']['return_mean'], '.1f')}"
                     f"{on(g['true_dynamics'])}"])
    td = next(iter(d["goals"].values()))["true_dynamics"]
    header = ["goal", "env options", "PDDM model trained on the circle, no retraining",
              "PDDM model trained on this goal", f"MPPI on the true simulator "
              f"(N {td['population']}, H {td['horizon']}, {td['num_envs']} hands)"]
    return "\n".join(md_table(header, rows) + [
        "", "Returns (100 steps; −5 per metre of distance to the target per step, −500 for a "
        "drop): mean over 3 seeds × 2 evaluation episodes, per seed in brackets, evaluation "
        f"seed {d['eval_seed']}; trained models at 10 iterations (2400 env steps).", "",
        source("pddm_hand", f, machine_text=machine(d["machine"]), code=f"`{d['code']}`")])


# -------------------------------------------------------------------------------------
# experiments/sweeps
# -------------------------------------------------------------------------------------


# -------------------------------------------------------------------------------------
# experiments/planning_dimension
# -------------------------------------------------------------------------------------


@table_of("planning_dimension/README.md", "lq-gap", "planning_dimension/results/lq_gap.json")
def lq_gap(d: dict, f: str) -> str:
    """Relative gap to the LQ optimum per planner (rows) and search dimension (columns) at
    the smallest and the largest budget, and the splines' representable floor."""
    rows_in = d["rows"]
    dims = sorted({r["dimension"] for r in rows_in})
    budgets = sorted({r["budget_sequences"] for r in rows_in})
    names = list(dict.fromkeys(r["planner"] for r in rows_in))
    gap = {(r["planner"], r["dimension"], r["budget_sequences"]): r["gap_mean"]
           for r in rows_in}
    header = ["planner"] + [f"N={b}: dim {dd}" for b in (budgets[0], budgets[-1])
                            for dd in dims]
    rows = [[n] + [num(gap[(n, dd, b)], ".3g") if (n, dd, b) in gap else "-"
                   for b in (budgets[0], budgets[-1]) for dd in dims] for n in names]
    floor = {x["dimension"]: x["spline_floor_gap"] for x in d["spline_floors"]}
    rows.append(["*spline floor*"] + [num(floor[dd], ".3g") for _ in (0, 1) for dd in dims])
    m = d["machine"]
    return "\n".join(md_table(header, rows) + ["", source(
        "planning_dimension", f, machine_text=machine(m), code=code_state(m))])


@table_of("planning_dimension/README.md", "hand-gap",
          "planning_dimension/results/hand_track.json")
def hand_gap(d: dict, f: str) -> str:
    """True H-step return and gap to the best (``hand.py``'s docstring) per planner (rows)
    and budget (columns) on the hand, with the reference sequences."""
    budgets = sorted({r["budget_sequences"] for r in d["rows"]})
    names = list(dict.fromkeys(r["planner"] for r in d["rows"]))
    cell = {(r["planner"], r["budget_sequences"]): r for r in d["rows"]}
    header = ["planner"] + [f"N={b}: {k}" for b in budgets for k in ("return", "gap")]
    rows = [[n + (" (surrogate)" if cell[n, budgets[0]]["on_surrogate"] else "")]
            + [x for b in budgets for x in ((num(cell[n, b]["return_mean"], ".3f"),
                                              num(cell[n, b]["gap_mean"], ".2f"))
                                             if (n, b) in cell else ("-", "-"))]
            for n in names]
    refs = d["references"]
    for label, key in (("*hold still (a = 0)*", "hold_still"),
                       ("*random sequence (mean)*", "random_mean"),
                       ("*best found*", "best")):
        rows.append([label] + [num(float(np.mean(refs[key])), ".3f"), ""] * len(budgets))
    m = d["machine"]
    ilqr = refs["ilqr"]
    return "\n".join(md_table(header, rows) + [
        "", f"iLQR (not run): S = {ilqr['state_floats']} floats of MJX state, one "
        f"iteration = {ilqr['step_evaluations_per_iteration']} step evaluations "
        f"({ilqr['step_evaluations_per_iteration'] / (budgets[-1] * d['horizon']):.0f}x the "
        f"largest budget). Run time {d['total_s'] / 60:.0f} min.", "",
        source("planning_dimension", f, machine_text=machine(m), code=code_state(m))])


# -------------------------------------------------------------------------------------
# docs/ilqr_decision.md (a benchmark's result file)
# -------------------------------------------------------------------------------------

ILQR = "../benchmarks/results/ilqr_vs_trajax.json"


def _ilqr_rows(d: dict) -> dict:
    return {(r["problem"], r["mode"], r["solver"]): r for r in d["rows"]}


def _ilqr_source(d: dict) -> str:
    c = d["commit"]
    state = f"`{c['head'][:7]}`" + (" (uncommitted changes)" if c["dirty"] else "")
    m = d["machine"]
    return (f"Source: [`benchmarks/results/ilqr_vs_trajax.json`]({ILQR}); machine: "
            f"{m['cpu']}, {m['cpu_count']} cores, devices {', '.join(m['devices'])}, jax "
            f"{m['jax']}; code state: {state}.")


def _ilqr_solvers(d: dict, problem: str) -> list[str]:
    """[mbjax at trajax's iterations, trajax, mbjax at its default iterations]."""
    names = list(dict.fromkeys(r["solver"] for r in d["rows"] if r["problem"] == problem))
    default = f"mbjax ({d['settings'][problem]['iterations']} it)"
    return [next(n for n in names if n.startswith("mbjax") and n != default), "trajax",
            default]


@table_of("../docs/ilqr_decision.md", "ilqr-pendulum", ILQR)
def ilqr_pendulum(d: dict, f: str) -> str:
    """Final cost and largest |u| on the box-constrained pendulum."""
    cell = _ilqr_rows(d)
    order = _ilqr_solvers(d, "pendulum")
    order = [order[2], order[1], order[0]]
    h = d["settings"]["pendulum"]["horizon"]
    header = [f"pendulum, H = {h}, zero initial controls"] + order
    rows = []
    for mode, label in (("jit", "one start"), ("vmap64", f"{d['settings']['num_envs']} "
                                                          "random starts")):
        costs = [cell["pendulum", mode, s]["final_cost"] for s in order]
        rows.append([f"{label}: {'final cost' if mode == 'jit' else 'mean final cost'}"]
                    + [bold(num(c, ".2f"), c == min(costs)) for c in costs])
        rows.append([f"{label}: max \\|u\\|"]
                    + [num(cell["pendulum", mode, s]["max_abs_action"], ".2f")
                       for s in order])
    return "\n".join(md_table(header, rows) + ["", _ilqr_source(d)])


@table_of("../docs/ilqr_decision.md", "ilqr-timing", ILQR)
def ilqr_timing(d: dict, f: str) -> str:
    """Median seconds per solve after compilation (iterations in brackets)."""
    cell = _ilqr_rows(d)
    rows = []
    for problem in ("lq", "pendulum"):
        order = _ilqr_solvers(d, problem)
        st = d["settings"][problem]
        for mode in ("jit", f"vmap{d['settings']['num_envs']}"):
            times = [cell[problem, mode, s]["median_s"] * 1e3 for s in order[:2]]
            rows.append([f"{problem} H={st['horizon']}", mode] + [
                bold(f"{num(cell[problem, mode, s]['median_s'] * 1e3, '.2f')} ms "
                     f"({cell[problem, mode, s]['iterations_run']} it)",
                     i < 2 and cell[problem, mode, s]["median_s"] * 1e3 == min(times))
                for i, s in enumerate(order)])
    header = ["problem", "mode", "mbjax, same iterations as trajax", "trajax",
              "mbjax, default iterations"]
    return "\n".join(md_table(header, rows) + ["", _ilqr_source(d)])


@table_of("sweeps/README.md", "sweep-kappa-horizon", "sweeps/results/sweep.json")
def sweep_kappa_horizon(d: dict, f: str) -> str:
    res = d["results"]
    kappas = sorted({r["planner.kappa"] for r in res})
    horizons = sorted({r["planner.horizon"] for r in res})
    cell = {(r["planner.kappa"], r["planner.horizon"]): r for r in res}
    rows = [[f"{k:g}"] + [pm(cell[k, h]["return_mean"], cell[k, h]["return_std"], ".1f")
                          for h in horizons] for k in kappas]
    its = sorted({r["iteration"] for r in res})
    n = sorted({len(r["returns"]) for r in res})
    m = d["machine"]
    return "\n".join(md_table(["κ"] + [f"H = {h}" for h in horizons], rows) + [
        "", f"Return at iteration {'/'.join(map(str, its))} (the last), mean ± std over "
        f"{'/'.join(map(str, n))} seeds.", "",
        source("sweeps", f, machine_text=machine(m), code=code_state(m))])


# -------------------------------------------------------------------------------------
# experiments/model_diagnostics
# -------------------------------------------------------------------------------------

DIAG = "model_diagnostics/results/diagnostics-halfcheetah-seed0/metrics.json"


def _diag_source() -> str:
    m = load(DIAG)["machine"]
    return source("model_diagnostics", DIAG, machine_text=machine(m), code=code_state(m))


@table("model_diagnostics/README.md", "diagnostics-one-step", DIAG)
def diagnostics_one_step() -> str:
    d = load(DIAG)
    o, t = d["one_step"], d["one_step_train"]
    rows = [["MSE (data units, mean over dims)", f"{o['mse']:.2f}", ""],
            ["MSE / Var[Δs]", f"{o['nmse']:.3f}", f"{t['nmse']:.3f}"],
            ["R² (mean over dims)", f"{o['r2']:.3f}", f"{t['r2']:.3f}"],
            ["NLL, moment-matched Gaussian (nats/dim, normalised units)",
             num(o["nll_moment_matched"], ".3f"), num(t["nll_moment_matched"], ".3f")],
            ["NLL, ensemble mixture", num(o["nll_mixture"], ".3f"), num(t["nll_mixture"], ".3f")],
            [f"NLL, single members (mean of {len(o['nll_members'])})",
             num(o["nll_member_mean"], ".3f"), ""]]
    return "\n".join(md_table(["metric", f"held-out ({o['num_transitions']} transitions)",
                               "train split"], rows) + ["", _diag_source()])


@table("model_diagnostics/README.md", "diagnostics-calibration", DIAG)
def diagnostics_calibration() -> str:
    c = load(DIAG)["calibration"]
    rows = [[f"μ ± {float(k):g}σ", f"{c['coverage'][k] * 100:.1f} %",
             f"{c['expected_coverage'][k] * 100:.1f} %"] for k in c["coverage"]]
    return "\n".join(md_table(["interval", "observed", "expected"], rows)
                     + ["", _diag_source()])


PROPAGATION = {"ts_inf": "TS-∞", "ts1": "TS-1", "expectation": "expectation"}


def _sig3(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 1 else f"{x:#.3g}".rstrip(".")


@table("model_diagnostics/README.md", "diagnostics-kstep", DIAG)
def diagnostics_kstep() -> str:
    k = load(DIAG)["k_step"]
    ks = [str(x) for x in k["ks"]]
    tab = k["table"]
    rows = [["model, mean over windows"] + [_sig3(tab[x]["nmse"]) for x in ks],
            ["model, median window"] + [_sig3(tab[x]["nmse_median"]) for x in ks],
            ["baseline (s_t held fixed)"] + [_sig3(tab[x]["baseline_nmse"]) for x in ks],
            ["particle spread (var / Var[s])"] + [_sig3(tab[x]["spread_nvar"]) for x in ks],
            ["windows"] + [str(tab[x]["num_windows"]) for x in ks]]
    return "\n".join(md_table(["k"] + ks, rows) + [
        "", f"{PROPAGATION.get(k['propagation'], k['propagation'])} with "
        f"{k['num_particles']} particles; {k['num_trajectories']} held-out trajectories of "
        f"{k['trajectory_length']} steps.", "", _diag_source()])


# -------------------------------------------------------------------------------------
# experiments/README.md: the overview's headline column
# -------------------------------------------------------------------------------------


def _mpc_headline() -> str:
    d = load(MPC_RESULTS)
    ra = run_all()
    env = "cartpole_swingup"
    rs = {e["method"]: e for e in d["experiments"] if e["env"] == env}
    last = lambda e: pm(e["return_mean"][-1], e["return_std"][-1], ".1f")  # noqa: E731
    td, rnd = ra._band(rs["true-dynamics MPC"]), ra._band(rs["random policy"])
    return (f"cart-pole swing-up after {rs['PDDM']['env_steps'][-1]} env steps: PDDM "
            f"{last(rs['PDDM'])}, PETS {last(rs['PETS'])}, true-dynamics MPC "
            f"{pm(*td, '.1f')}, random {num(rnd[0], '.1f')}")


def _mbpo_headline() -> str:
    brax = load("mbpo/results/brax_locomotion.json")["results"]
    pend = load("mbpo/results/mbpo_vs_sac.json")["results"]
    tv = load("mbpo/results/terminal_value.json")["results"]
    out = []
    for env, name in (("halfcheetah", "HalfCheetah"), ("hopper", "Hopper")):
        mb, sac = brax[env]["mbpo"]["summary"], brax[env]["sac"]["summary"]
        f = lambda s: pm(s["final"]["mean"], s["final"]["std"])  # noqa: E731
        k = f"{sac['env_steps'] / 1000:g}k"
        if env == "halfcheetah":
            reach = brax[env]["mbpo_steps_to_sac_final"]["per_seed"]
            out.append(f"{name} at {k} steps: MBPO {f(mb)} vs SAC {f(sac)} (MBPO reaches "
                       f"SAC's {k} return at {span(reach, 1000, 'k')})")
        else:
            out.append(f"{name}: MBPO {f(mb)} vs SAC {f(sac)} ({num(mb['curve_mean']['mean'])}"
                       f" vs {num(sac['curve_mean']['mean'])} averaged over all epochs)")
    mbpo = next(r for r in pend.values() if r["config"]["model_based"])
    sac1 = next(r for r in pend.values() if not r["config"]["model_based"]
                and r["config"]["updates_per_step"] == 1)
    sac_steps = [s for s in sac1["steps_to_threshold"] if s is not None]
    out.append(f"MBPO solves the pendulum in {span(mbpo['steps_to_threshold'])} env steps vs "
               f"~{round(np.mean(sac_steps), -2):.0f} for SAC at G = 1")
    with_v = [r for r in tv if r["dynamics"] == "true simulator" and r["terminal_value"]]
    no_v = [r for r in tv if r["dynamics"] == "true simulator" and not r["terminal_value"]]
    short, long = min(with_v, key=lambda r: r["horizon"]), max(no_v, key=lambda r: r["horizon"])
    out.append(f"a terminal value lets H = {short['horizon']} match H = {long['horizon']} "
               f"({num(short['return_mean'])} vs {num(long['return_mean'])})")
    return "; ".join(out)


def _sweep_headline() -> str:
    res = load("sweeps/results/sweep.json")["results"]
    at = {r["planner.horizon"]: r for r in res if r["planner.kappa"] == 1.0}
    hs = sorted(at)
    return (f"H = {hs[0]} cannot swing up ({num(at[hs[0]]['return_mean'])} at κ 1), "
            f"H = {' / '.join(map(str, hs[1:]))} can "
            f"({' / '.join(num(at[h]['return_mean']) for h in hs[1:])})")


def _hand_headline() -> str:
    b = load(f"{HAND_RESULTS}/baselines-hand_track.json")
    main = load(f"{HAND_RESULTS}/main-cpu-hand_track.json")["rows"][0]
    mostly = []
    for which in ABLATIONS:
        for r in load(f"{HAND_RESULTS}/ablation-{which}-cpu-hand_track.json")["rows"]:
            if r["seed_iterations_with_drop"] > r["seed_iterations"] / 2:
                mostly.append(_ablation_label(which, r["variant"], _run_config(r["run_dir"]))
                              .split(" (")[0])
    bao = load(f"{HAND_RESULTS}/main-cpu-hand_baoding.json")
    row = bao["rows"][0]
    curve = bao["curves"][row["variant"]]
    clean = [i for i, n in zip(curve["iteration"], curve["seeds_with_drop"]) if n == 0]
    sim = max((load(str(p.relative_to(HERE))) for p in
               (HERE / HAND_RESULTS).glob("true-dynamics-hand_baoding-N*.json")),
              key=lambda t: t["return_mean"])
    last3 = pm(main["return_last3_mean"], main["return_last3_std_over_seeds"], ".1f")
    return (f"hand_track: {last3} over the last 3 of {main['iterations']} iterations vs hold-still "
            f"{num(b['hold_still']['return_mean'], '.1f')}, random "
            f"{num(b['random']['return_mean'])}; {', '.join(mostly[:-1])} and {mostly[-1]} drop "
            f"the ball in most "
            f"iterations; hand_baoding: {num(row['return_first_iteration'])} → "
            f"{num(row['return_best_iteration'])} (MPPI on the simulator: "
            f"{num(sim['return_mean'])}) at iterations {clean[0]}–{clean[-1]}, "
            f"{num(row['return_last3_mean'])} over the last 3")


def _planning_dimension_headline() -> str:
    lq = load("planning_dimension/results/lq_gap.json")
    top, dim = max(r["budget_sequences"] for r in lq["rows"]), max(r["dimension"]
                                                                   for r in lq["rows"])
    gap = {r["planner"]: r["gap_mean"] for r in lq["rows"]
           if r["budget_sequences"] == top and r["dimension"] == dim}
    hand = load("planning_dimension/results/hand_track.json")
    budgets = sorted({r["budget_sequences"] for r in hand["rows"]})
    best = {b: min((r for r in hand["rows"] if r["budget_sequences"] == b),
                   key=lambda r: r["gap_mean"]) for b in budgets}
    return (f"LQ at dimension {dim}, N = {top}: gap to the optimum CEM {num(gap['cem'], '.3g')}, "
            f"random shooting {num(gap['random_shooting'], '.3g')}, gradient "
            f"{num(gap['gradient'], '.2g')}, iLQR {num(gap['ilqr'], '.2g')}; hand "
            f"(dimension {hand['horizon'] * hand['action_size']}): smallest gap to the best "
            + ", ".join(f"{best[b]['planner']} at N = {b}" for b in budgets))


OVERVIEW = (
    ("mpc", "PETS and PDDM (+ random policy and true-dynamics MPC) on pendulum, cart-pole "
     "swing-up, brax halfcheetah and reacher; GPU presets at published sizes", _mpc_headline),
    ("mbpo", "MBPO vs SAC (pendulum; brax Hopper and HalfCheetah at 30k env steps), "
     "branched-rollout start modes A/B/C, DAgger distillation of MPC, MPC with a terminal "
     "value (pendulum)", _mbpo_headline),
    ("model_diagnostics", "one-step error / NLL, k-step error, calibration of a 7 × 4×200 "
     "Gaussian ensemble on halfcheetah random-policy data",
     lambda: "k-step error and calibration plots"),
    ("sweeps", "`mbjax sweep`: PDDM on the pendulum, MPPI κ × horizon, κ vmapped with the "
     "seeds", _sweep_headline),
    ("pddm_hand", "PDDM on the 24-DoF MJX hand: `hand_track` and `hand_baoding` at CPU "
     "scale, ablations of planner / horizon / model size / ensemble on `hand_track`; GPU "
     "preset at the paper's size", _hand_headline),
    ("planning_dimension", "the notes' claim that sampling planners scale poorly with H × \\|a\\|:"
     " every planner (± spline knots, iLQR) on LQ problems with known optima (dimension 10 "
     "to 400) and on the 24-DoF hand (true simulator, matched budgets)",
     _planning_dimension_headline),
)


@table("README.md", "experiments-overview", MPC_RESULTS, "mbpo/results/*.json",
       "sweeps/results/sweep.json", f"{HAND_RESULTS}/*.json",
       "planning_dimension/results/*.json")
def experiments_overview() -> str:
    rows = [[f"[`{folder}/`]({folder}/README.md)", what, headline()]
            for folder, what, headline in OVERVIEW]
    return "\n".join(md_table(["folder", "what", "headline (CPU scale, mean ± std over 3 "
                                                 "vmapped seeds)"], rows) + [
        "", "Headlines from the same files as the folders' tables (see each README for the "
        "source, machine and code state of every number)."])


# -------------------------------------------------------------------------------------
# Rewriting and checking
# -------------------------------------------------------------------------------------


def _block(marker: str, body: str) -> str:
    return f"{BEGIN.format(marker)}\n{body.strip(chr(10))}\n{END}"


def _span(text: str, marker: str) -> tuple[int, int] | None:
    start = text.find(BEGIN.format(marker))
    if start < 0:
        return None
    end = text.find(END, start)
    return None if end < 0 else (start, end + len(END))


def render(tables: list[Table] | None = None) -> tuple[dict[Path, str], list[str]]:
    """(README path -> regenerated text, problems): every table rendered into its README.
    Problems: a missing marker, a renderer that failed, a marker nothing renders."""
    tables = TABLES if tables is None else tables
    texts: dict[Path, str] = {}
    problems: list[str] = []
    for t in tables:
        path = HERE / t.readme
        text = texts.setdefault(path, path.read_text())
        where = _span(text, t.marker)
        if where is None:
            problems.append(f"{t.readme}: marker {BEGIN.format(t.marker)} ... {END} not found")
            continue
        try:
            body = t.render()
        except Exception as err:  # noqa: BLE001  (reported, not raised: list them all)
            problems.append(f"{t.readme}: {t.marker}: cannot render from "
                            f"{', '.join(t.sources)}: {type(err).__name__}: {err}")
            continue
        texts[path] = text[:where[0]] + _block(t.marker, body) + text[where[1]:]
    if tables is not TABLES:  # a subset: other markers are not its business
        return texts, problems
    known = {(HERE / t.readme, t.marker) for t in tables}
    for path in sorted(set(HERE.glob("**/README.md")) | set(texts)):
        text = texts.get(path) or path.read_text()
        for marker in MARKER_RE.findall(text):
            if (path, marker) not in known:
                problems.append(f"{path.relative_to(HERE)}: marker {marker!r} has no renderer "
                                "in experiments/tables.py")
    return texts, problems


def check(tables: list[Table] | None = None) -> list[str]:
    """The tables whose README text differs from what the result files give (and any
    problems), one line each; empty when every table is up to date."""
    tables = TABLES if tables is None else tables
    texts, problems = render(tables)
    stale = []
    for t in tables:
        path = HERE / t.readme
        old, new = path.read_text(), texts[path]
        a, b = _span(old, t.marker), _span(new, t.marker)
        if a is not None and b is not None and old[a[0]:a[1]] != new[b[0]:b[1]]:
            stale.append(f"{t.readme}: {t.marker} differs from {', '.join(t.sources)}")
    return stale + problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 listing the tables that differ")
    parser.add_argument("--list", action="store_true", help="list the tables and exit")
    args = parser.parse_args(argv)
    if args.list:
        for t in TABLES:
            print(f"experiments/{t.readme}  {t.marker}  <- {', '.join(t.sources)}")
        return 0
    if args.check:
        out = check()
        for line in out:
            print(line)
        if out:
            print(f"{len(out)} table(s) out of date: run python experiments/tables.py")
            return 1
        print(f"all {len(TABLES)} tables match their result files")
        return 0
    texts, problems = render()
    for path, text in texts.items():
        if path.read_text() != text:
            path.write_text(text)
            print(f"rewrote {path.relative_to(HERE.parent)}")
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
