"""The run report: ``report.md`` and ``pareto.png``, plus each saved variant's plot and model card."""

from __future__ import annotations

import json
import os
from pathlib import Path

SIGNAL_COLORS = {"magnitude": "tab:blue", "gradient": "tab:orange", "hybrid": "tab:green"}
_OTHER_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def _color(signal: str, extra: dict[str, str]) -> str:
    if signal in SIGNAL_COLORS:
        return SIGNAL_COLORS[signal]
    if signal not in extra:
        extra[signal] = _OTHER_COLORS[len(extra) % len(_OTHER_COLORS)]
    return extra[signal]


def plot_pareto(results: dict, path: str | os.PathLike, *, highlight: str | None = None) -> Path:
    """Accuracy vs sparsity: every variant a point coloured by signal, the front as a line, dense as a
    dashed line, ``highlight`` (a variant id) ringed and labelled. Saved as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    variants = [v for v in results.get("variants") or [] if "same_as" not in v]
    front_ids = list(results.get("pareto") or [])
    by_id = {v["id"]: v for v in results.get("variants") or []}
    fig = Figure(figsize=(7, 4.5), dpi=110)
    ax = fig.subplots()
    extra: dict[str, str] = {}
    any_tuned = any(v.get("oneshot") for v in variants)
    for signal in dict.fromkeys(v.get("signal", "?") for v in variants):
        for tuned_pts in ((False, True) if any_tuned else (False,)):
            pts = [v for v in variants if v.get("signal", "?") == signal and bool(v.get("oneshot")) == tuned_pts
                   and not v.get("dropped_by")]
            if not pts:
                continue
            label = signal + ((", fine-tuned" if tuned_pts else ", one-shot") if any_tuned else "")
            ax.scatter([100 * v["sparsity"] for v in pts], [100 * v["accuracy"] for v in pts], s=28, alpha=0.8,
                       marker="s" if tuned_pts else "o", color=_color(signal, extra), label=label, zorder=3)
        out = [v for v in variants if v.get("signal", "?") == signal and v.get("dropped_by")]
        if out:  # raced out: accuracy measured on a sample of the split only
            ax.scatter([100 * v["sparsity"] for v in out], [100 * v["accuracy"] for v in out], s=22, alpha=0.6,
                       marker="x", color=_color(signal, extra), zorder=3)
    tuned = [v for v in variants if v.get("oneshot")]
    if tuned:  # one-shot accuracy of the fine-tuned variants, joined to their fine-tuned point
        for v in tuned:
            ax.plot([100 * v["sparsity"]] * 2, [100 * v["oneshot"]["accuracy"], 100 * v["accuracy"]], ":",
                    color="gray", lw=0.8, zorder=1)
        ax.scatter([100 * v["sparsity"] for v in tuned], [100 * v["oneshot"]["accuracy"] for v in tuned], marker="+",
                   s=30, color="gray", zorder=3, label="one-shot, before fine-tuning")
    front = sorted((by_id[i] for i in front_ids if i in by_id), key=lambda v: v["sparsity"])
    if front:
        basis = " (fine-tuned)" if results.get("pareto_basis") == "finetuned" else ""
        ax.plot([100 * v["sparsity"] for v in front], [100 * v["accuracy"] for v in front], "-", color="black",
                lw=1.2, zorder=2, label=f"Pareto front{basis}")
        ax.scatter([100 * v["sparsity"] for v in front], [100 * v["accuracy"] for v in front], s=70,
                   facecolors="none", edgecolors="black", lw=1.0, zorder=4)
    dense = (results.get("dense") or {}).get("accuracy")
    if dense is not None:
        ax.axhline(100 * dense, color="gray", ls="--", lw=1, zorder=1, label=f"dense ({100 * dense:.2f}%)")
        ax.scatter([0.0], [100 * dense], marker="D", color="gray", s=30, zorder=3)
    if highlight is not None:
        if highlight not in by_id:
            raise KeyError(f"variant {highlight!r} is not in the results (variants: {', '.join(by_id)})")
        v = by_id[highlight]
        ax.scatter([100 * v["sparsity"]], [100 * v["accuracy"]], marker="*", s=260, color="red",
                   edgecolors="black", lw=0.6, zorder=5, label=f"this variant ({highlight})")
    raced = any(v.get("dropped_by") for v in variants)
    if raced:
        ax.scatter([], [], marker="x", color="gray", label="raced out (top-1 on fewer images)")
    ax.set_xlabel("sparsity of prunable weights (%)")
    ax.set_ylabel("top-1 accuracy (%)")
    base = results.get("base_model") or ""
    title = f"Mix-and-Match variants of {base}" if base else "Mix-and-Match variants"
    ax.set_title(title + (f"\n{images_seen_line(results, short=True)}" if raced else ""), fontsize=10 if not raced else 7)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _pct(x) -> str:
    return "–" if x is None else f"{100 * float(x):.2f}%"


def images_seen_line(results: dict, *, short: bool = False) -> str:
    """How many images the variants saw: all of them, or (racing) how many before they were dropped."""
    ev = results.get("evaluation") or {}
    variants = [v for v in results.get("variants") or [] if "same_as" not in v]
    dropped = [v for v in variants if v.get("dropped_by")]
    n = (ev.get("rounds") or [results.get("eval_samples")])[-1]
    split = results.get("select_split") or results.get("eval_split")
    line = f"images seen: {len(variants) - len(dropped)} of {len(variants)} variants saw all {n} images of '{split}'"
    if dropped:
        seen = sorted({v["samples"] for v in dropped})
        line += f"; {len(dropped)} raced out after {'/'.join(map(str, seen))} images"
        if not short:
            line += f" ({ev.get('images_evaluated')} of {ev.get('images_if_full')} image evaluations)"
    return line


def labels_line(results: dict) -> str | None:
    """How the dataset's labels were matched to the model's classes, when not one to one (None otherwise)."""
    labels = results.get("labels") or {}
    if labels.get("mapping"):
        pairs = ", ".join(f"{k}→{v}" for k, v in list(labels["mapping"].items())[:8])
        more = " …" if len(labels["mapping"]) > 8 else ""
        return f"labels: dataset classes remapped to the model's ({labels.get('how')}): {pairs}{more}"
    if labels.get("how") == "by_index" and labels.get("note"):
        return f"labels: dataset class i is model class i, matched {labels['note']}"
    return None


def _header(results: dict) -> list[str]:
    """The report's title and what was measured on what."""
    lines = [
        f"# Mix-and-Match report: {results.get('base_model')}",
        "",
        f"- base revision: `{results.get('base_revision') or 'unknown'}` ({results.get('library')})",
        f"- dataset: `{results.get('dataset')}`, evaluated on `{results.get('eval_split')}`"
        + (f" ({results['eval_samples']} samples)" if results.get("eval_samples") else ""),
    ]
    if labels_line(results):
        lines.append(f"- {labels_line(results)}")
    if results.get("skipped_images"):
        skipped = ", ".join(f"{n} in `{split}`" for split, n in results["skipped_images"].items())
        lines.append(f"- undecodable images skipped (--skip-bad-images): {skipped}")
    return lines


def report_markdown(results: dict) -> str:
    """The text of ``report.md``: dense, then every variant (the front first, sparsest first)."""
    front = list(results.get("pareto") or [])
    dense = results.get("dense") or {}
    variants = sorted(results.get("variants") or [],
                      key=lambda v: (v["id"] not in front, -float(v["sparsity"]), -float(v["accuracy"]), v["id"]))
    tuned = any(v.get("oneshot") for v in variants)
    if tuned:
        return _report_finetuned(results, front, dense, variants)
    lines = [
        *_header(results),
        f"- {len(variants)} variants, {len(front)} on the Pareto front (listed first)",
        *([f"- {images_seen_line(results)}; the front was chosen on `{results.get('select_split')}`"]
          if results.get("evaluation") else []),
        "",
        "![accuracy vs sparsity](pareto.png)",
        "",
        "| id | signal | strategy | sparsity | top-1 | top-5 | images | on front | saved |",
        "|---|---|---|---:|---:|---:|---:|:---:|---|",
        f"| dense | – | – | 0.00% | {_pct(dense.get('accuracy'))} | {_pct(dense.get('top5'))} | "
        f"{results.get('eval_samples') or '–'} | – | – |",
    ]
    for v in variants:
        on = "yes" if v["id"] in front else (f"same as {v['same_as']}" if v.get("same_as") else "no")
        if v.get("dropped_by") and not v.get("same_as"):
            on = f"no (raced out: beaten by {v['dropped_by']})"
        saved = f"[{v['path']}]({v['path']})" if v.get("path") else "–"
        images = f"{v['samples']} `{v.get('split')}`" if v.get("samples") else "–"
        lines.append(f"| {v['id']} | {v.get('signal', '–')} | {v.get('strategy', '–')} | {_pct(v['sparsity'])} | "
                     f"{_pct(v['accuracy'])} | {_pct(v.get('top5'))} | {images} | {on} | {saved} |")
    if results.get("baselines"):
        lines += ["", "## Baselines at matched sparsity", "", "| id | method | matched to | sparsity | top-1 | top-5 |",
                  "|---|---|---|---:|---:|---:|"]
        for b in results["baselines"]:
            lines.append(f"| {b['id']} | {b.get('method')} | {b.get('matched_to')} | {_pct(b['sparsity'])} | "
                         f"{_pct(b['accuracy'])} | {_pct(b.get('top5'))} |")
    lines += ["", "Unstructured zeros do not shrink a dense checkpoint or speed up dense kernels; see each variant's "
              "README.md for what does.", ""]
    return "\n".join(lines)


def _report_finetuned(results: dict, front: list, dense: dict, variants: list) -> str:
    """``report.md`` of a run with fine-tuning: one-shot and fine-tuned accuracy side by side, labelled; the front
    is the one recomputed on the fine-tuned accuracies."""
    def acc(v, key):
        return _pct((v.get("oneshot") or v).get(key)), (_pct(v.get(key)) if v.get("oneshot") else "not fine-tuned")

    ft = {v["id"]: v["finetune"] for v in variants if v.get("finetune")}
    lines = [
        *_header(results),
        f"- {len(variants)} variants; the one-shot Pareto front ({len(results.get('pareto_oneshot') or [])}) was "
        f"fine-tuned, and the front was chosen again on the fine-tuned accuracies: {len(front)} variant(s), "
        "listed first",
        "",
        "![accuracy vs sparsity](pareto.png)",
        "",
        "| id | signal | strategy | sparsity | top-1 one-shot | top-1 fine-tuned | top-5 one-shot | top-5 fine-tuned "
        "| fine-tuning (steps, best step) | on front | saved |",
        "|---|---|---|---:|---:|---:|---:|---:|---|:---:|---|",
        f"| dense | – | – | 0.00% | {_pct(dense.get('accuracy'))} | – | {_pct(dense.get('top5'))} | – | – | – | – |",
    ]
    for v in variants:
        on = "yes" if v["id"] in front else (f"same as {v['same_as']}" if v.get("same_as") else "no")
        saved = f"[{v['path']}]({v['path']})" if v.get("path") else "–"
        (a1, f1), (a5, f5) = acc(v, "accuracy"), acc(v, "top5")
        f = ft.get(v["id"])
        how = "–" if not f else (f"{f.get('steps')}, restored step 0" if f.get("best_step") == 0
                                 else f"{f.get('steps')}, {f.get('best_step', '?')}")
        lines.append(f"| {v['id']} | {v.get('signal', '–')} | {v.get('strategy', '–')} | {_pct(v['sparsity'])} | "
                     f"{a1} | {f1} | {a5} | {f5} | {how} | {on} | {saved} |")
    if results.get("baselines"):
        lines += ["", "## Baselines at matched sparsity (same fine-tuning budget)", "",
                  "| id | method | matched to | sparsity | top-1 one-shot | top-1 fine-tuned |", "|---|---|---|---:|---:|---:|"]
        for b in results["baselines"]:
            a1, f1 = acc(b, "accuracy")
            lines.append(f"| {b['id']} | {b.get('method')} | {b.get('matched_to')} | {_pct(b['sparsity'])} | {a1} | "
                         f"{f1} |")
    lines += ["", "Unstructured zeros do not shrink a dense checkpoint or speed up dense kernels; see each variant's "
              "README.md for what does.", ""]
    return "\n".join(lines)


def write_report(run_dir: str | os.PathLike, results: dict, *, repos: dict[str, str] | None = None) -> Path:
    """Write ``report.md`` and ``pareto.png`` into ``run_dir``, and into every saved variant folder its own
    ``pareto.png`` (itself highlighted) and ``README.md`` card. Returns the report's path."""
    from .card import write_variant_card

    run_dir = Path(run_dir)
    plot_pareto(results, run_dir / "pareto.png")
    report = run_dir / "report.md"
    report.write_text(report_markdown(results))
    repos = repos or {}
    for v in results.get("variants") or []:
        if not v.get("path"):
            continue
        vdir = run_dir / v["path"]
        if not (vdir / "mixmatch.json").is_file():
            continue
        plot_pareto(results, vdir / "pareto.png", highlight=v["id"])
        recipe = json.loads((vdir / "mixmatch.json").read_text())
        write_variant_card(vdir, results, v, recipe, repo_id=repos.get(v["id"]))
    return report
