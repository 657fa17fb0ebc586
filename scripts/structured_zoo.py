#!/usr/bin/env python
"""Structured pruning across the zoo: for every architecture of ``hf_mixmatch.structured.zoo.CASES``, run
``try_structured`` (cut a quarter of every prunable group, at least one unit, check the pruned model against the
gated one, save, reload, check again) and write the table, the success rate and every "not supported" reason
into ``docs/STRUCTURED_ZOO.md`` (included in ``docs/BENCHMARKS.md`` by ``scripts/assemble_benchmarks.py``).

    OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/structured_zoo.py [--only NAME ...] [--out docs/STRUCTURED_ZOO.md]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

from hf_mixmatch.errors import StructuredUnsupported
from hf_mixmatch.structured import try_structured
from hf_mixmatch.structured.zoo import CASES, TIMEOUT, build_case

OUT = Path(__file__).resolve().parent.parent / "docs" / "STRUCTURED_ZOO.md"
COMMAND = "OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/structured_zoo.py"


def run_case(case) -> dict:
    start = time.perf_counter()
    model, x = build_case(case)
    try:
        res = try_structured(model, x, timeout=TIMEOUT)
    except StructuredUnsupported as exc:
        return {"name": case.name, "ok": False, "why": str(exc).removeprefix("not supported: "),
                "seconds": time.perf_counter() - start}
    return {"name": case.name, "ok": True, "groups": f"{res.prunable}/{res.groups}", "heads": res.heads_pruned,
            "params": f"{res.params_dense:,} → {res.params_pruned:,}",
            "removed": 1 - res.params_pruned / res.params_dense, "diff": res.max_diff,
            "seconds": time.perf_counter() - start}


def render(rows: list[dict], cases) -> str:
    by_name = {c.name: c for c in cases}
    ok = sum(r["ok"] for r in rows)
    lines = [
        "# Structured pruning across the zoo (issue 11)",
        "",
        f"Command: `{COMMAND}` (torch {torch.__version__}, {platform.machine()}, 1 thread; random weights, "
        f"group discovery bounded at {TIMEOUT:g} s).",
        "",
        f"**{ok} of {len(rows)} architectures succeed ({ok / len(rows):.0%})**: a quarter of every prunable group "
        "(at least one unit: channel, MLP unit or attention head) is removed physically; the pruned model's outputs "
        "equal the gated dense model's in float64 (max |diff| below), and the saved model reloads with identical "
        "outputs. Groups whose removal would change more than the removed units (cross-channel norms, grouped or "
        "weight-standardised convolutions, attention that writes back at the input width) are kept dense.",
        "",
        "| architecture | library | built as | input | prunable groups | heads cut | parameters | removed | "
        "max abs diff | time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = by_name[r["name"]]
        head = f"| {c.name} | {c.library} | `{c.arch}` | {c.size}² |"
        if r["ok"]:
            lines.append(f"{head} {r['groups']} | {r['heads']} | {r['params']} | {r['removed']:.1%} | "
                         f"{r['diff']:.1e} | {r['seconds']:.1f} |")
        else:
            lines.append(f"{head} not supported | | | | | {r['seconds']:.1f} |")
    lines += ["", "## Not supported, and why", ""]
    lines += [f"- **{r['name']}**: {r['why']}" for r in rows if not r["ok"]] or ["- (none)"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", help="case names (default: every case)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    cases = [c for c in CASES if not args.only or c.name in args.only]
    rows = []
    for case in cases:
        rows.append(run_case(case))
        r = rows[-1]
        print(f"{case.name}: {'ok' if r['ok'] else 'not supported: ' + r['why']} ({r['seconds']:.1f} s)",
              file=sys.stderr, flush=True)
    args.out.write_text(render(rows, cases))
    print(f"{sum(r['ok'] for r in rows)}/{len(rows)} succeed; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
