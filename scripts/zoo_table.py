"""The zoo table for docs/BENCHMARKS.md: per architecture of tests/zoo_models.py, the roles found, whether
``prune`` ran end to end (and how long it took), and whether ``structured`` pruned it to a model that runs.

    PYTHONPATH=. python scripts/zoo_table.py --write docs/BENCHMARKS_zoo.md --json zoo_rows.json
    python scripts/assemble_benchmarks.py      # copies the page into docs/BENCHMARKS.md (section 6)

Models are built from tiny configs with random weights (no download); data: 8 calibration and 8 evaluation
crops of scikit-learn's two sample photos. ``prune`` runs the default observed ranges (magnitude/SNIP/GraSP
at 0.7/0.8/0.9), the magnitude signal and the balanced/aggressive strategies. ``structured`` is read from
``--structured-json`` ({case id: status}) when given, else tried here: 30% of the parameters removed (grid
search), then the pruned model must run on a batch; any failure is recorded as "not supported: <why>".
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import torch

from hf_mixmatch.layers import ROLES
from hf_mixmatch.models import logits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from zoo_data import prepared  # noqa: E402
from zoo_models import NUM_LABELS, TRANSFORMERS_SKIPPED, ZOO, build  # noqa: E402

COMMAND = "PYTHONPATH=. python scripts/zoo_table.py --write docs/BENCHMARKS_zoo.md"
SHORT = {"stem": "stem", "patch_embed": "patch", "conv": "conv", "depthwise": "dw", "downsample": "ds",
         "attn_qkv": "qkv", "attn_proj": "proj", "mlp_up": "up", "mlp_down": "down", "patch_merging": "merge",
         "classifier": "head", "linear": "lin"}


class _Timeout(Exception):
    pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:120].replace("|", "/")


def roles_found(layers) -> str:
    counts = Counter(layer.role for layer in layers)
    return " ".join(f"{SHORT[r]} {counts[r]}" for r in ROLES if counts[r])


def run_prune(case, workdir: Path) -> tuple[str, str, float]:
    from hf_mixmatch import PruneConfig, load_model, run_mixmatch
    from hf_mixmatch.models import Preprocess

    loaded = load_model(build(case), preprocess=Preprocess(size=(case.size,) * 2, mean=(0.5,) * 3, std=(0.5,) * 3),
                        num_labels=NUM_LABELS)
    config = PruneConfig(model=case.id, output_dir=str(workdir / case.id), signals=("magnitude",),
                         strategies=("balanced", "aggressive"), batch_size=4, progress=False)
    t0 = time.perf_counter()
    try:
        result = run_mixmatch(config, loaded=loaded, data=prepared(case.size, NUM_LABELS))
    except Exception as exc:  # noqa: BLE001 - the table records any failure
        return "-", f"error: {_first_line(exc)}", time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    top = max(v["sparsity"] for v in result.variants)
    status = f"ok ({top:.0%})" + (" no GraSP" if "signals_skipped" in result.results else "")
    return roles_found(result.layers), status, seconds


def run_structured(case, limit_s: int) -> str:
    from hf_mixmatch.structured import SearchConfig, classification_task, structured_prune

    model = build(case)
    data = prepared(case.size, NUM_LABELS)
    x = data.eval.tensors[0][:2]

    def alarm(*_):
        raise _Timeout

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(limit_s)
    try:
        res = structured_prune(model, classification_task(data.calib, data.eval, batch_size=8),
                               example=data.calib.tensors[0][:1], with_baseline=False,
                               config=SearchConfig(sparsity=0.3, tolerance=0.1, search="grid"))
        with torch.no_grad():
            out = logits(res.model, x)
        if tuple(out.shape) != (len(x), NUM_LABELS):
            return f"not supported: the pruned model outputs {tuple(out.shape)}"
        return f"ok ({res.recipe['achieved_sparsity']:.0%} params)"
    except _Timeout:
        return f"not supported: over {limit_s} s"
    except Exception as exc:  # noqa: BLE001 - the table records any failure
        why = _first_line(exc)
        return why if why.startswith("not supported:") else f"not supported: {why}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def table(rows: list[dict]) -> str:
    lines = ["| architecture | library | roles found | prune | prune time (s) | structured |",
             "|---|---|---|---|---:|---|"]
    for r in rows:
        lines.append(f"| {r['id']} | {r['library']} | {r['roles']} | {r['prune']} | {r['seconds']:.1f} | "
                     f"{r['structured']} |")
    n_ok = sum(r["prune"].startswith("ok") for r in rows)
    n_st = sum(r["structured"].startswith("ok") for r in rows)
    lines.append("")
    lines.append(f"`prune` succeeded on {n_ok}/{len(rows)} architectures, `structured` on {n_st}/{len(rows)}. "
                 "Not in the zoo (transformers types that cannot take an image tensor or need a package that is "
                 "not a dependency): " + "; ".join(f"{k}: {v}" for k, v in TRANSFORMERS_SKIPPED.items()) + ".")
    return "\n".join(lines)


def page(body: str) -> str:
    return ("# Zoo: prune and structured on every architecture\n\n"
            "Every vision classifier architecture of transformers' image-classification auto mapping, timm's "
            "`test_*` models and real timm families at reduced size, built from tiny configs with random weights "
            "(`tests/zoo_models.py`); 8 calibration + 8 evaluation crops of scikit-learn's two sample photos. "
            "Roles (prunable layers per role): `stem`, `patch` patch embedding, `conv`, `dw` depthwise conv, `ds` "
            "downsample/shortcut, `qkv`/`proj` attention, `up`/`down` MLP, `merge` patch merging, `head` "
            "classifier heads, `lin` other linear. `prune`: default observed ranges, magnitude signal, balanced + "
            "aggressive strategies; the largest sparsity reached is shown (layers under 10K weights are clamped "
            "to [0, 0.10] by the paper's rule, so the tiniest models stop near 10%); \"no GraSP\": the model has "
            "an operation without a second derivative, the ranges were built from magnitude and SNIP. "
            "`structured`: 30% of the parameters removed by `hf_mixmatch.structured` (grid search, 30 s limit), "
            "then the pruned model must run on a batch; otherwise the first line of the error. Times are wall "
            "seconds on a 2-core CPU shared with other jobs, so they are indicative only. Regenerate with:\n\n"
            f"    {COMMAND}\n\n{body}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="case ids to run (default: the whole zoo)")
    parser.add_argument("--structured-json", type=Path, help="{case id: status} produced by the structured code")
    parser.add_argument("--structured-limit", type=int, default=30, help="seconds allowed per structured try")
    parser.add_argument("--no-structured", action="store_true", help="leave the structured column empty")
    parser.add_argument("--write", type=Path, help="write the zoo page (markdown) here")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--from-json", type=Path, help="render rows saved by --json instead of running the zoo")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    known = {c.id for c in ZOO}
    unknown = set(args.only or ()) - known
    if unknown:
        parser.error(f"unknown case id(s) {sorted(unknown)}: see tests/zoo_models.py")
    given = json.loads(args.structured_json.read_text()) if args.structured_json else {}
    rows = json.loads(args.from_json.read_text()) if args.from_json else []
    with tempfile.TemporaryDirectory() as tmp:
        for case in ZOO if not args.from_json else ():
            if args.only and case.id not in args.only:
                continue
            roles, status, seconds = run_prune(case, Path(tmp))
            if case.id in given:
                structured = given[case.id]
            elif args.no_structured:
                structured = "-"
            else:
                structured = run_structured(case, args.structured_limit)
            rows.append({"id": case.id, "library": case.library, "roles": roles, "prune": status,
                         "seconds": seconds, "structured": structured})
            print(f"{case.id}: {status} {seconds:.1f}s | structured {structured}", file=sys.stderr, flush=True)
    body = table(rows)
    print(body)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.write:
        args.write.write_text(page(body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
