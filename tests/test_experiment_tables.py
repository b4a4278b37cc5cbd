"""The result tables of experiments/**/README.md equal what experiments/tables.py renders
from the committed result files (it only reads files: no training, no compilation)."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLES_PY = ROOT / "experiments" / "tables.py"


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("experiment_tables", TABLES_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_readme_table_matches_its_result_files(tables):
    stale = tables.check()
    assert stale == [], ("README tables differ from the result files (run python "
                         "experiments/tables.py):\n" + "\n".join(stale))


def test_the_required_readmes_have_generated_tables(tables):
    readmes = {t.readme for t in tables.TABLES}
    for readme in ("mbpo/README.md", "mpc/README.md", "pddm_hand/README.md",
                   "sweeps/README.md"):
        assert readme in readmes
    assert "mbpo-terminal-value" in {t.marker for t in tables.TABLES}


def test_check_reports_a_typed_number_and_a_missing_marker(tables, tmp_path):
    t = next(t for t in tables.TABLES if t.marker == "mbpo-terminal-value")
    text = (TABLES_PY.parent / t.readme).read_text()
    good = tables.render([t])[0][TABLES_PY.parent / t.readme]
    assert good == text
    typed = tmp_path / "README.md"
    typed.write_text(text.replace("−832 ± 482", "−832 ± 483", 1))
    out = tables.check([dataclasses.replace(t, readme=str(typed))])
    assert len(out) == 1 and "mbpo-terminal-value differs" in out[0]
    bare = tmp_path / "bare.md"
    bare.write_text("no markers here\n")
    out = tables.check([dataclasses.replace(t, readme=str(bare))])
    assert len(out) == 1 and "not found" in out[0]
