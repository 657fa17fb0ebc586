"""GPU timings: bf16 vs fp32, the library's evaluation vs a plain-torch loop, a whole run vs its floor.

Wall-clock seconds with ``torch.cuda.synchronize()`` around every timed region (CPU seconds mean nothing for GPU
work); each throughput is the median of three passes after a warm-up pass. Per model:

* dense evaluation throughput (images/s) of a plain-torch loop (``torch.inference_mode``, batches moved from host
  memory, NHWC for convolutional models, ``torch.autocast`` for bf16), of the same loop over batches already on the
  GPU (the no-transfer ceiling), and of the library's ``predict_hits`` — in fp32 and bf16, with top-1 and the share
  of images whose correctness is the same in both;
* a whole ``run_mixmatch`` (13 strategies x 3 signals, ``--eval full``) at fp32 and at bf16, against its floor: one
  calibration forward+backward pass + one plain evaluation per distinct variant, at the same precision; and racing
  (``--eval racing``) at fp32 vs full.

    python scripts/benchmark_gpu.py --dataset DIR --models reference_models/resnet,reference_models/vit
    python scripts/benchmark_gpu.py --case 224 --photos 2048      # timm resnet50 + transformers swin-tiny, random

Runs on CPU too (for a smoke test), where it times with the wall clock as well.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmark_speed import _strategies, benchmark_cases, front_differences


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _median_time(fn, device: torch.device, repeats: int = 3) -> float:
    fn()  # warm-up: cuDNN autotuning, autocast caches, lazy module init
    times = []
    for _ in range(repeats):
        t0 = _now(device)
        fn()
        times.append(_now(device) - t0)
    return statistics.median(times)


def plain_eval(model, dataset, *, batch_size: int, device: torch.device, precision: str, resident=None) -> None:
    """The floor: a plain inference loop, no masks, no bookkeeping."""
    from hf_mixmatch.evaluate import batch_iter
    from hf_mixmatch.models import logits
    from hf_mixmatch.precision import PRECISIONS, wants_channels_last

    nhwc = wants_channels_last(model, device)
    dtype = PRECISIONS[precision]
    batches = resident if resident is not None else (x for x, _ in batch_iter(dataset, None, batch_size))
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for x in batches:
            x = x.to(device, non_blocking=True)
            logits(model, x.contiguous(memory_format=torch.channels_last) if nhwc and x.dim() == 4 else x)


def calib_seconds(model, layers, data, *, batch_size: int, device: torch.device, precision: str) -> float:
    from hf_mixmatch.evaluate import batch_iter
    from hf_mixmatch.layers import weights_of
    from hf_mixmatch.models import logits
    from hf_mixmatch.precision import autocast

    params = list(weights_of(model, layers).values())

    def once():
        for x, y in batch_iter(data.calib, None, batch_size):
            with autocast(precision, device):
                loss = torch.nn.functional.cross_entropy(logits(model, x.to(device)).float(), y.to(device))
            torch.autograd.grad(loss, params)

    return _median_time(once, device, repeats=1)


def throughput(model, data, device: torch.device, batch_size: int) -> dict:
    from hf_mixmatch.evaluate import batch_iter, predict_hits

    n = len(data.eval)
    on_gpu = [x.to(device) for x, _ in batch_iter(data.eval, None, batch_size)]
    out, hits = {}, {}
    for p in ("fp32", "bf16"):
        plain = _median_time(lambda: plain_eval(model, data.eval, batch_size=batch_size, device=device, precision=p),
                             device)
        res = _median_time(lambda: plain_eval(model, None, batch_size=batch_size, device=device, precision=p,
                                              resident=on_gpu), device)
        lib = _median_time(lambda: hits.__setitem__(p, predict_hits(model, data.eval, batch_size=batch_size,
                                                                    precision=p)), device)
        out[p] = {"plain_img_s": n / plain, "resident_img_s": n / res, "library_img_s": n / lib,
                  "plain_s": plain, "top1": hits[p].metrics()["accuracy"]}
    out["same_correctness"] = float((hits["fp32"].top1 == hits["bf16"].top1).float().mean())
    return out


def run_once(name, loaded, data, args, *, mode: str, precision: str, resident: str, device: torch.device):
    from hf_mixmatch.pipeline import PruneConfig, run_mixmatch

    with tempfile.TemporaryDirectory() as tmp:
        config = PruneConfig(model=name, output_dir=tmp, overwrite=True, save="none", progress=False,
                             batch_size=args.batch_size, calib_samples=len(data.calib), eval_resident=resident,
                             strategies=_strategies(args.strategies), eval=mode, precision=precision,
                             bn_recalibrate=getattr(args, "bn_recalibrate", False))
        profiler = None
        if args.profile and (mode, precision, resident) == RUNS[0]:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        t0 = _now(device)
        results = run_mixmatch(config, loaded=loaded, data=data).results
        seconds = _now(device) - t0
        if profiler is not None:  # where the host spends the run (the first run of each model)
            import io
            import pstats

            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(45)
            with open(args.profile, "a") as f:
                f.write(f"==== {name} {mode} {precision} resident={resident}: {seconds:.1f}s\n{text.getvalue()}\n")
        return results, seconds


RUNS = (("full", "fp32", "auto"), ("full", "fp32", "never"), ("full", "bf16", "auto"), ("racing", "fp32", "auto"))


def bench_model(name: str, loaded, data, args, device: torch.device) -> dict:
    from hf_mixmatch.evaluate import batch_iter
    from hf_mixmatch.layers import list_prunable

    model = loaded.model.to(device).eval()
    layers = list_prunable(model, num_labels=loaded.num_labels)
    row = {"case": name, "eval_samples": len(data.eval), "calib_samples": len(data.calib),
           "dense": throughput(model, data, device, args.eval_batch_size)}
    runs, floors = {}, {}
    for mode, precision, resident in RUNS:
        results, seconds = run_once(name, loaded, data, args, mode=mode, precision=precision, resident=resident,
                                    device=device)
        runs[(mode, precision, resident)] = results
        model = loaded.model.eval()  # run_mixmatch moved it to the accelerator's device; weights restored
        unique = sum("same_as" not in v for v in results["variants"])
        bs = results["evaluation"]["batch_size"]
        if (precision, bs) not in floors:  # one plain pass: from host batches, and from batches on the GPU
            on_gpu = [x.to(device) for x, _ in batch_iter(data.eval, None, bs)]
            floors[(precision, bs)] = (
                calib_seconds(model, layers, data, batch_size=args.batch_size, device=device, precision=precision),
                _median_time(lambda: plain_eval(model, data.eval, batch_size=bs, device=device, precision=precision),
                             device),
                _median_time(lambda: plain_eval(model, None, batch_size=bs, device=device, precision=precision,
                                                resident=on_gpu), device))
            del on_gpu
        calib, plain_host, plain_dev = floors[(precision, bs)]
        t = results["timings"]
        row[f"{mode}_{precision}_{resident}"] = {
            "run_s": seconds, "variants_s": t["variants_s"], "floor_host_s": calib + unique * plain_host,
            "floor_resident_s": calib + unique * plain_dev, "unique_variants": unique, "eval_batch_size": bs,
            "resident": results["evaluation"]["resident"]["resident"], "front": results["pareto"],
            "images_evaluated": results["evaluation"]["images_evaluated"]}
    full = runs[("full", "fp32", "auto")]
    row["racing_vs_full_variants"] = row["racing_fp32_auto"]["variants_s"] / row["full_fp32_auto"]["variants_s"]
    row["racing_front_differences"] = front_differences(full, runs[("racing", "fp32", "auto")])
    row["host_front_differences"] = front_differences(full, runs[("full", "fp32", "never")], "host-batch")
    row["bf16_front_differences"] = front_differences(full, runs[("full", "bf16", "auto")], "bf16")
    return row


def report(rows: list[dict], env: dict) -> str:
    lines = [f"{env['device_name']}, torch {env['torch']}, transformers {env['transformers']}, timm {env['timm']}"]
    for r in rows:
        d = r["dense"]
        lines.append(f"{r['case']}: {r['eval_samples']} eval / {r['calib_samples']} calib images")
        for p in ("fp32", "bf16"):
            lines.append(f"  dense {p}: top-1 {d[p]['top1']:.4f}; img/s plain {d[p]['plain_img_s']:.0f}, resident "
                         f"{d[p]['resident_img_s']:.0f}, library {d[p]['library_img_s']:.0f}")
        lines.append(f"  same per-image correctness fp32/bf16: {100 * d['same_correctness']:.2f}%")
        for mode, precision, resident in RUNS:
            x = r[f"{mode}_{precision}_{resident}"]
            lines.append(f"  run {mode} {precision} resident={resident} {x['resident']}: {x['run_s']:.1f}s (variants "
                         f"{x['variants_s']:.1f}s); floor host {x['floor_host_s']:.1f}s / on-GPU "
                         f"{x['floor_resident_s']:.1f}s ({x['unique_variants']} distinct); ratio "
                         f"{x['run_s'] / x['floor_host_s']:.2f}x / {x['run_s'] / x['floor_resident_s']:.2f}x; "
                         f"eval batch {x['eval_batch_size']}")
        lines.append(f"  racing/full variants time {r['racing_vs_full_variants']:.2f}x")
        for key in ("racing", "host", "bf16"):
            diffs = r[f"{key}_front_differences"]
            lines.append(f"  {key} front vs full fp32 front: " + ("identical" if not diffs else
                                                                  "".join(f"\n    {s}" for s in diffs)))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bn-recalibrate", action=argparse.BooleanOptionalAction, default=False,
                    help="re-estimate BatchNorm statistics per variant (the library's default; off here: the floor "
                         "and the recorded figures count no re-estimation passes)")
    ap.add_argument("--case", choices=("models", "224"), default="models")
    ap.add_argument("--models", default="reference_models/resnet,reference_models/vit")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--eval-samples", type=int, default=None)
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--photos", type=int, default=2048, help="224 px case: generated evaluation photos")
    ap.add_argument("--batch-size", type=int, default=64, help="calibration batch (the run's --batch-size)")
    ap.add_argument("--eval-batch-size", type=int, default=256, help="batch of the dense throughput loops")
    ap.add_argument("--strategies", default="default")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--profile", default=None, help="append a cProfile of each model's first run to this file")
    args = ap.parse_args()
    os.environ.setdefault("HF_MIXMATCH_NO_PROGRESS", "1")

    import timm
    import transformers

    from hf_mixmatch.data import load_data
    from hf_mixmatch.models import load_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = {"device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU",
           "torch": torch.__version__, "transformers": transformers.__version__, "timm": timm.__version__}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases, dataset = benchmark_cases(args, Path(tmp), {m: m for m in args.models.split(",")}, args.dataset)
        for name, path in cases.items():
            loaded = load_model(str(path))
            data = load_data(dataset, loaded.preprocess, calib_samples=args.calib_samples,
                             eval_samples=args.eval_samples, num_labels=loaded.num_labels)
            rows.append(bench_model(name, loaded, data, args, device))
            print(report(rows[-1:], env), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
