"""``hf-mixmatch structured MODEL --dataset DATA --sparsity 0.5 ...``: thin glue over the Python API."""

from __future__ import annotations

import argparse

from ..outdir import check_output_dir, open_output_dir, record, staged_dir


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "structured",
        help="remove whole channels / MLP units / heads (component-aware, soft gates) under a metric floor",
        description="Structured, component-aware pruning: the model really gets smaller and faster. Writes "
                    "results.json (params, FLOPs, CPU latency at batch 1/32, accuracy; dense and pruned) and "
                    "the pruned model (model.safetensors + config.json + structured.json) under DIR/model.",
    )
    p.add_argument("model", help="Hub id, local folder, or 'default'")
    p.add_argument("--dataset", required=True, help="dataset (Hub id, local folder, or 'default')")
    p.add_argument("--image-column")
    p.add_argument("--label-column")
    p.add_argument("--calib-split")
    p.add_argument("--eval-split")
    p.add_argument("--calib-samples", type=int, default=256)
    p.add_argument("--eval-samples", type=int, default=512)
    p.add_argument("--select-samples", type=int, default=256,
                   help="held-out training-split samples on which the searches are scored and the floor is checked "
                        "(the evaluation split only reports)")
    p.add_argument("--sparsity", type=float, default=0.5, help="share of parameters removed (default 0.5)")
    p.add_argument("--tolerance", type=float, default=0.02, help="allowed deviation from --sparsity (default 0.02)")
    p.add_argument("--metric-floor", type=float, help="minimum top-1 accuracy (0-1) of the pruned model")
    p.add_argument("--search", choices=("grid", "gradient", "both"), default="both")
    p.add_argument("--steps", type=int, default=150, help="gradient-search steps")
    p.add_argument("--finetune-steps", type=int, default=0)
    p.add_argument("--flops-weight", type=float, default=0.0, metavar="LAMBDA",
                   help="FLOP-aware gradient search: add LAMBDA x expected MACs / dense MACs to its loss, still under "
                        "the parameter target (default 0: parameters only; e.g. 10 moves the removal to "
                        "high-resolution, FLOP-heavy channels, for lower latency)")
    p.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="gradient search: remove units in blocks of N, so every pruned group's width stays a multiple "
                        "of N (default 1: no rounding; e.g. 8 keeps conv widths CPU-friendly)")
    p.add_argument("--components", nargs="+", metavar="NAME=PATTERN[,PATTERN]",
                   help="components as module-name globs (or re:REGEX); default: derived, see --layout")
    p.add_argument("--layout", choices=("stem-stages-head", "body-head"),
                   help="derived components when --components is not given (default stem-stages-head; "
                        "body-head: stem and stages one component, so the stem's residual stream is prunable too)")
    p.add_argument("--latency-runs", type=int, default=30,
                   help="rounds of CPU timing per batch size, dense and pruned in turn (median reported)")
    p.add_argument("--channels-last", action="store_true",
                   help="time CNNs in channels-last (NHWC) layout, PyTorch's faster CPU path (both dense and pruned)")
    p.add_argument("--bn-recalibrate", action=argparse.BooleanOptionalAction, default=True,
                   help="re-estimate the pruned model's BatchNorm statistics on the calibration images, kept when "
                        "they raise the accuracy on the selection samples (default on; no effect without BatchNorm)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_cli)


def run_cli(args) -> int:
    from ..data import load_image_dataset, prepare_splits
    from ..evaluate import evaluate
    from ..models import load_model
    from .io import describe_base, save_structured
    from .measure import measure_many
    from .. import __version__
    from ..card_structured import write_structured_card
    from ..pipeline import write_json_atomic
    from .prune import structured_prune
    from .search import SearchConfig
    from .tasks import classification_task

    # everything is validated (output dir, options, model, data) before the output dir is touched
    out = check_output_dir(args.output_dir, overwrite=args.overwrite)
    cfg = SearchConfig(sparsity=args.sparsity, tolerance=args.tolerance, metric_floor=args.metric_floor,
                       search=args.search, steps=args.steps, finetune_steps=args.finetune_steps, seed=args.seed,
                       flops_weight=args.flops_weight, round_to=args.round_to, bn_recalibrate=args.bn_recalibrate)
    loaded = load_model(args.model)
    ds, image_col, label_col = load_image_dataset(args.dataset, image_column=args.image_column,
                                                  label_column=args.label_column)
    data = prepare_splits(ds, loaded.preprocess, calib_split=args.calib_split, eval_split=args.eval_split,
                          calib_samples=args.calib_samples, eval_samples=args.eval_samples, seed=args.seed,
                          image_column=image_col, label_column=label_col, num_labels=loaded.num_labels,
                          dataset_name=str(args.dataset), train_samples=args.select_samples,
                          id2label=loaded.id2label)
    model = loaded.model.eval()
    example = data.calib.tensors[0][:1]
    # searches are scored on held-out training samples, never on the split the results report
    task = classification_task(data.calib, data.train)
    base_cfg = describe_base(model)
    dense_acc = evaluate(model, data.eval, batch_size=64)
    res = structured_prune(model, task, example=example, config=cfg, components=args.components,
                           layout=args.layout)
    # dense and pruned timed in turn, so load on a shared machine hits both alike
    stats = measure_many({"dense": model, "pruned": res.model}, tuple(example.shape), runs=args.latency_runs,
                         channels_last=args.channels_last)
    dense_stats, pruned_stats = stats["dense"], stats["pruned"]
    pruned_acc = evaluate(res.model, data.eval, batch_size=64)
    # the model is written into a hidden sibling and renamed into place once complete; an earlier run is
    # replaced only then (a failed search or save leaves it intact, and nothing half-written looks like a model)
    out = open_output_dir(out, overwrite=args.overwrite)
    options = {k: getattr(args, k) for k in ("search", "steps", "finetune_steps", "flops_weight", "round_to", "calib_split",
                                             "eval_split", "calib_samples", "eval_samples", "select_samples",
                                             "seed", "components", "layout", "bn_recalibrate")}
    res.recipe.update(base_model=loaded.source, base_revision=loaded.revision, dataset=str(args.dataset),
                      library=loaded.library, preprocess=loaded.preprocess.to_dict(), options=options,
                      hf_mixmatch_version=__version__)
    results = {
        "model": loaded.source,
        "library": loaded.library,
        "license": loaded.license,
        "dataset": str(args.dataset),
        "eval_split": data.eval_split,
        "eval_samples": len(data.eval),
        "metric_name": "accuracy",
        "target_sparsity": cfg.sparsity,
        "flops_weight": cfg.flops_weight,
        "achieved_sparsity": res.recipe["achieved_sparsity"],
        "winner": res.recipe["winner"],
        "search": res.recipe["search"],
        "metric_floor": cfg.metric_floor,
        "bn_recalibration": res.recipe["bn_recalibration"],
        "dense": {**dense_stats, "accuracy": dense_acc["accuracy"], "top5": dense_acc["top5"]},
        "pruned": {**pruned_stats, "accuracy": pruned_acc["accuracy"], "top5": pruned_acc["top5"]},
        "model_dir": str(out / "model"),
    }
    with staged_dir(out, "model") as staging:
        model_dir = save_structured(res.model, res.recipe, base_cfg, staging)
        loaded.save_preprocessing(model_dir)  # e.g. preprocessor_config.json (timm keeps it in config.json)
        write_structured_card(model_dir, results, res.recipe)
    record(out, "results.json")
    write_json_atomic(out / "results.json", results)  # last: a results.json means the run finished
    print(f"removed {results['achieved_sparsity']:.1%} of the parameters ({res.recipe['winner']} search): "
          f"accuracy {dense_acc['accuracy']:.4f} -> {pruned_acc['accuracy']:.4f}, "
          f"b32 latency {dense_stats['latency_ms']['b32']:.1f} -> {pruned_stats['latency_ms']['b32']:.1f} ms; "
          f"wrote {out}")
    return 0
