"""Where the benchmark scripts put their results, and how they write them.

Imported by the scripts of this folder as a sibling module (``python benchmarks/<x>.py``
puts ``benchmarks/`` on ``sys.path``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def write_result(result: dict, name: str, out: Path | None,
                 plot: Callable[[Path], None]) -> Path:
    """Writes ``result`` as JSON and its plot beside it (same name, ``.png``).

    The JSON goes to ``out``, or by default to ``benchmarks/results/<name>_<device>.json``
    with ``<device>`` the device kind stored in ``result["machine"]`` (lower case, spaces as
    underscores). ``plot(png_path)`` draws the figure; both paths are printed. Returns the
    JSON path.
    """
    tag = result["machine"]["device_kind"].replace(" ", "_").lower()
    out = out or RESULTS / f"{name}_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot(out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return out
