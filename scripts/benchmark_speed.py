"""How close is a Mix-and-Match run to the floor of work it cannot avoid, and what does racing save?

All times are CPU seconds of this process (``time.process_time``; one thread), which a busy shared machine
disturbs far less than wall time. Floor, measured in the same process on the same decoded tensors: one calibration forward+backward pass (the
gradient signals) + one plain-torch evaluation (``torch.inference_mode`` loop at batch 256, no masks) per
distinct variant; for a convolutional model also the floor with that loop fed NHWC batches (the run probes
that layout on the CPU, so it can beat the NCHW floor): ``ratio_run_to_best_floor`` against the faster of
the two. The run does more (GraSP's Hessian-gradient pass for observed ranges, the dense evaluation
with its batch-size probe, masks and sparsity), so the ratio shows the overhead of everything else.

    python scripts/benchmark_speed.py                                # embedded default model (its test split)
    python scripts/benchmark_speed.py --eval-split train --calib-split test   # default model, 1,438 images
    python scripts/benchmark_speed.py --model DIR --dataset DIR      # any model folder + dataset
    python scripts/benchmark_speed.py --case 224 --photos 256        # timm resnet50 + transformers swin-tiny

Each case prints: run (``--eval full``) vs floor, racing vs full evaluation time and whether the fronts are
identical (else every difference in points), and top-1 of a bf16 vs an fp32 dense evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch


def floor_seconds(model, layers, data, *, batch_size: int, eval_batch_size: int = 256) -> dict[str, float]:
    """Calibration forward+backward, and one plain evaluation forward over the whole eval split."""
    from hf_mixmatch.evaluate import batch_iter
    from hf_mixmatch.layers import weights_of
    from hf_mixmatch.models import logits
    from hf_mixmatch.precision import layout_candidates

    params = list(weights_of(model, layers).values())
    t0 = time.process_time()
    for x, y in batch_iter(data.calib, None, batch_size):
        torch.autograd.grad(torch.nn.functional.cross_entropy(logits(model, x), y), params)
    calib = time.process_time() - t0
    out = {"calib_fwd_bwd_s": calib}
    for key, nhwc in (("eval_forward_s", False), ("eval_forward_nhwc_s", True)):
        if nhwc and True not in layout_candidates(model, "cpu"):
            continue  # not a convolutional model: NHWC is not a layout it could use
        t0 = time.process_time()
        with torch.inference_mode():
            for x, _ in batch_iter(data.eval, None, eval_batch_size):
                logits(model, x.contiguous(memory_format=torch.channels_last) if nhwc else x)
        out[key] = time.process_time() - t0
    return out


def front_differences(full: dict, raced: dict, label: str = "racing") -> list[str]:
    """Each variant on one front and not the other, with its accuracy gap in points to the other front."""
    by_full = {v["id"]: v for v in full["variants"]}
    out = []
    for vid in sorted(set(full["pareto"]) ^ set(raced["pareto"])):
        v = by_full[vid]
        other = raced if vid in full["pareto"] else full
        best = max((by_full[o]["accuracy"] for o in other["pareto"] if by_full[o]["sparsity"] >= v["sparsity"]),
                   default=0.0)
        out.append(f"{vid} only on the {'full' if vid in full['pareto'] else label} front "
                   f"({100 * (v['accuracy'] - best):+.2f} points vs the other front at >= its sparsity)")
    return out


def bench_case(name: str, loaded, data, args, data_select=None) -> dict:
    from hf_mixmatch.evaluate import predict_hits
    from hf_mixmatch.layers import list_prunable
    from hf_mixmatch.pipeline import PruneConfig, run_mixmatch

    model = loaded.model.eval()
    layers = list_prunable(model, num_labels=loaded.num_labels)
    before = floor_seconds(model, layers, data, batch_size=args.batch_size)
    runs, cpu = {}, {}
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            config = PruneConfig(model=name, output_dir=tmp, overwrite=True, save="none", progress=False,
                                 ranges=args.ranges, batch_size=args.batch_size, calib_samples=len(data.calib),
                                 signals=tuple(args.signals.split(",")), strategies=_strategies(args.strategies),
                                 eval="racing" if mode == "select" else mode,
                                 bn_recalibrate=getattr(args, "bn_recalibrate", False))
            t0 = time.process_time()
            runs[mode] = run_mixmatch(config, loaded=loaded, data=data_select if mode == "select" else data).results
            cpu[mode] = time.process_time() - t0
    after = floor_seconds(model, layers, data, batch_size=args.batch_size)
    floor = {k: min(before[k], after[k]) for k in before}  # the less disturbed of the two measurements
    full, raced = runs["full"], runs.get("racing")
    unique = sum("same_as" not in v for v in full["variants"])
    floor_s = floor["calib_fwd_bwd_s"] + unique * floor["eval_forward_s"]
    best_plain = min(floor["eval_forward_s"], floor.get("eval_forward_nhwc_s", math.inf))
    best_floor_s = floor["calib_fwd_bwd_s"] + unique * best_plain  # the plain loop in its faster input layout
    t = full["timings"]
    run_s = cpu["full"]  # the whole run_mixmatch call: dense + probe, scoring, ranges, variants, report
    n_eval = data.eval_samples
    precision, hits = {}, {}
    for p in ("fp32", "bf16") if args.bf16 else ():
        t0 = time.process_time()
        hits[p] = predict_hits(model, data.eval, batch_size=full["evaluation"]["batch_size"], precision=p,
                               channels_last=full["evaluation"]["channels_last"])
        precision[p] = {"top1": hits[p].metrics()["accuracy"], "images_per_s": n_eval / (time.process_time() - t0)}
    if args.bf16:
        precision["same_correctness"] = float((hits["fp32"].top1 == hits["bf16"].top1).float().mean())
    return {
        "case": name, "threads": torch.get_num_threads(), "eval_samples": n_eval, "calib_samples": len(data.calib),
        "variants": len(full["variants"]), "unique_variants": unique, **floor, "floor_s": floor_s,
        "run_s": run_s, "run_variants_s": t["variants_cpu_s"], "run_wall_s": t["total_s"],
        "ratio_run_to_floor": run_s / floor_s, "best_floor_s": best_floor_s,
        "ratio_run_to_best_floor": run_s / best_floor_s,
        "eval_batch_size": full["evaluation"]["batch_size"], "eval_channels_last": full["evaluation"]["channels_last"],
        "plain_eval_images_per_s": n_eval / floor["eval_forward_s"],
        "plain_best_layout_images_per_s": n_eval / best_plain,
        "run_eval_images_per_s": full["evaluation"]["images_evaluated"] / t["variants_cpu_s"],
        "front_size": len(full["pareto"]), "precision": precision,
        **({} if raced is None else {
            "racing_variants_s": raced["timings"]["variants_cpu_s"], "racing_run_s": cpu["racing"],
            "ratio_racing_to_full_eval": raced["timings"]["variants_cpu_s"] / t["variants_cpu_s"],
            "racing_rounds": raced["evaluation"]["rounds"], "racing_dropped": raced["evaluation"]["dropped"],
            "racing_images_fraction": raced["evaluation"]["images_evaluated"] / raced["evaluation"]["images_if_full"],
            "same_front": full["pareto"] == raced["pareto"], "front_differences": front_differences(full, raced)}),
        **({} if "select" not in runs else {
            "select_samples": len(data_select.select), "select_variants_s": runs["select"]["timings"]["variants_cpu_s"],
            "ratio_select_to_full_eval": runs["select"]["timings"]["variants_cpu_s"] / t["variants_cpu_s"],
            "select_front": runs["select"]["pareto"], "full_front": full["pareto"],
            "select_front_differences": front_differences(full, runs["select"], "selection")}),
    }


def _strategies(text: str) -> tuple[str, ...]:
    from hf_mixmatch.strategies import DEFAULT_STRATEGIES, STRATEGY_SETS

    return DEFAULT_STRATEGIES if text == "default" else STRATEGY_SETS.get(text) or tuple(text.split(","))


# ---------------------------------------------------------------------------------------- 224 px case


def generated_photos(out: Path, *, n_test: int, n_train: int, num_classes: int = 10, seed: int = 0) -> Path:
    """Crops of scikit-learn's two sample photos (640x427) at random scales and aspect ratios 1:2..2:1, flipped
    at random, labelled round-robin; written as train/test parquet."""
    import datasets
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    names = [f"class_{i}" for i in range(num_classes)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images = []
        for i in range(n):
            img = photos[i % len(photos)]
            aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
            h = int(rng.uniform(0.3, 1.0) * img.height)
            w = min(img.width, max(16, int(h * aspect)))
            top, left = int(rng.integers(0, img.height - h + 1)), int(rng.integers(0, img.width - w + 1))
            crop = img.crop((left, top, left + w, top + h))
            images.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop)
        ds = datasets.Dataset.from_dict({"image": images, "label": [i % num_classes for i in range(n)]}, features=feats)
        ds.to_parquet(str(out / f"{split}.parquet"))
    return out


def save_224_models(root: Path) -> dict[str, Path]:
    """timm resnet50 and transformers swin-tiny (its default config), random weights, 10 classes."""
    import timm
    from timm.models import save_for_hf
    from transformers import SwinConfig, SwinForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    resnet = timm.create_model("resnet50", pretrained=False, num_classes=10).eval()
    save_for_hf(resnet, str(root / "resnet50"), model_config={"num_classes": 10}, safe_serialization=True)
    swin = SwinForImageClassification(SwinConfig(num_labels=10)).eval()
    swin.save_pretrained(root / "swin_tiny")
    ViTImageProcessor(size={"height": 224, "width": 224}, resample=3).save_pretrained(root / "swin_tiny")
    return {"timm/resnet50": root / "resnet50", "transformers/swin-tiny": root / "swin_tiny"}


def benchmark_cases(args, tmp: Path, models: dict, dataset) -> tuple[dict, object]:
    """(name -> model path, dataset): the 224 px models and generated photos for ``--case 224``, else as given."""
    if args.case == "224":
        chosen = {k: v for k, v in save_224_models(tmp).items() if args.arch in ("all", k.split("/")[1])}
        return chosen, generated_photos(tmp / "photos", n_test=args.photos, n_train=args.calib_samples)
    return models, dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bn-recalibrate", action=argparse.BooleanOptionalAction, default=False,
                    help="re-estimate BatchNorm statistics per variant (the library's default; off here: the floor "
                         "and the recorded figures count no re-estimation passes)")
    ap.add_argument("--case", choices=("default", "224"), default="default")
    ap.add_argument("--model", default="default")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--eval-split", default=None)
    ap.add_argument("--calib-split", default=None)
    ap.add_argument("--eval-samples", type=int, default=None)
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--photos", type=int, default=256, help="224 px case: generated evaluation photos")
    ap.add_argument("--no-bf16", dest="bf16", action="store_false",
                    help="skip the bf16-vs-fp32 comparison (slow on a CPU without bf16 instructions)")
    ap.add_argument("--arch", choices=("all", "resnet50", "swin-tiny"), default="all", help="224 px case: which model")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--ranges", default="observed")
    ap.add_argument("--signals", default="magnitude,gradient,hybrid")
    ap.add_argument("--strategies", default="default", help="'default' (13), 'paper', or comma-separated")
    ap.add_argument("--modes", default="full,racing", help="'full,racing' (compare) or 'full' (run vs floor only); "
                    "add 'select' for the default configuration (racing on a held-out selection sample, the front "
                    "measured on the whole eval split)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_MIXMATCH_NO_PROGRESS", "1")

    from hf_mixmatch.data import load_data
    from hf_mixmatch.models import load_model

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        cases, dataset = benchmark_cases(args, Path(tmp), {args.model: args.model},
                                         args.dataset or ("default" if args.model == "default" else None))
        for name, path in cases.items():
            loaded = load_model(str(path))
            t0 = time.perf_counter()
            data = load_data(dataset, loaded.preprocess, calib_split=args.calib_split, eval_split=args.eval_split,
                             calib_samples=args.calib_samples, eval_samples=args.eval_samples,
                             num_labels=loaded.num_labels)
            decode_s = time.perf_counter() - t0
            data_select = None
            if "select" in args.modes.split(","):  # the default configuration: a held-out selection sample
                data_select = load_data(dataset, loaded.preprocess, calib_split=args.calib_split,
                                        eval_split=args.eval_split, calib_samples=args.calib_samples,
                                        eval_samples=args.eval_samples, num_labels=loaded.num_labels,
                                        select_samples=None)
            results.append({**bench_case(name, loaded, data, args, data_select), "decode_s": decode_s})
    if args.json:
        print(json.dumps(results, indent=1))
        return
    for r in results:
        print(f"{r['case']}: {r['eval_samples']} eval / {r['calib_samples']} calib images, {r['unique_variants']} "
              f"distinct variants, threads {r['threads']}, eval batch {r['eval_batch_size']}")
        print(f"  floor: calib fwd+bwd {r['calib_fwd_bwd_s']:.2f}s + {r['unique_variants']} x plain eval "
              f"{r['eval_forward_s']:.2f}s = {r['floor_s']:.1f}s;  whole run (--eval full) {r['run_s']:.1f}s, of which "
              f"variants {r['run_variants_s']:.1f}s (CPU seconds)")
        print(f"  ratio run/floor {r['ratio_run_to_floor']:.2f}x (vs the plain loop in its faster layout "
              f"{r['ratio_run_to_best_floor']:.2f}x; run NHWC: {r['eval_channels_last']});  evaluation {r['run_eval_images_per_s']:.0f} img/s "
              f"in the run vs {r['plain_eval_images_per_s']:.0f} img/s plain")
        if "racing_run_s" in r:
            print(f"  racing: whole run {r['racing_run_s']:.1f}s; variants {r['racing_variants_s']:.1f}s vs full "
                  f"{r['run_variants_s']:.1f}s = {r['ratio_racing_to_full_eval']:.2f}x; rounds {r['racing_rounds']}, "
                  f"{r['racing_dropped']} dropped, {100 * r['racing_images_fraction']:.0f}% of the image evaluations; "
                  f"same front: {r['same_front']} ({r['front_size']} variants)"
                  + "".join(f"\n    {d}" for d in r["front_differences"]))
        if "select_variants_s" in r:
            print(f"  default configuration (front chosen by racing on {r['select_samples']} held-out training "
                  f"images, front measured on the whole eval split): variants {r['select_variants_s']:.1f}s vs full "
                  f"{r['run_variants_s']:.1f}s = {r['ratio_select_to_full_eval']:.2f}x; front {r['select_front']} vs "
                  f"full {r['full_front']}" + "".join(f"\n    {d}" for d in r["select_front_differences"]))
        p = r["precision"]
        if p:
            print(f"  dense top-1 fp32 {p['fp32']['top1']:.4f} vs bf16 {p['bf16']['top1']:.4f} "
                  f"(same per-image correctness on {100 * p['same_correctness']:.1f}% of the images; "
                  f"{p['fp32']['images_per_s']:.0f} vs {p['bf16']['images_per_s']:.0f} img/s on CPU)")


if __name__ == "__main__":
    main()
