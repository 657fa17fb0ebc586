"""``hf-mixmatch`` command line. Thin: it parses arguments into the same config objects the Python API takes."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from .argtypes import float_in, non_negative_int, positive_float, positive_int

# Modules that add their own subcommands through ``add_cli(subparsers)``.
SUBCOMMAND_MODULES = ("hf_mixmatch.hub", "hf_mixmatch.verification", "hf_mixmatch.structured")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _strategy_names(text: str) -> tuple[str, ...] | None:
    from .strategies import STRATEGY_SETS

    if text.strip() == "default":  # resolved with the ranges (PruneConfig)
        return None
    return STRATEGY_SETS.get(text.strip(), None) or _names(text)


def add_prune_parser(subparsers) -> None:
    from .ranges import available_presets
    from .reconstruct import REFIT_DEFAULT
    from .signals import SELECTABLE_SIGNALS, SIGNALS
    from .strategies import CURVE_STRATEGIES, DEFAULT_STRATEGIES, STRATEGIES

    p = subparsers.add_parser(
        "prune",
        help="prune a classifier with Mix-and-Match (3 signals x 13 strategies), evaluate, keep the Pareto front",
        description=(
            "Score the model once on calibration data, derive per-layer sparsity ranges, build every "
            "signal x strategy variant, evaluate each on the evaluation split, and write results.json, "
            "report.md, pareto.png and one Hub-ready folder per saved variant."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", help="Hub id (org/name, timm/name, hf-hub:org/name), local model folder, or 'default' "
                                 "(the embedded digits model)")
    p.add_argument("--dataset", help="Hub id or local folder that datasets.load_dataset opens (parquet, arrow, "
                                     "imagefolder) or a save_to_disk folder; 'default' = embedded digits")
    p.add_argument("--dataset-name", help="what cards and recipes call the dataset (default: its Hub id, or a local "
                                          "folder's name and content fingerprint; local paths are never published)")
    p.add_argument("--output-dir", required=True, help="where results.json, report.md and variant folders go")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty output dir (cached scores are kept)")
    p.add_argument("--signals", type=_names, default=SIGNALS, help=f"comma-separated, from {','.join(SELECTABLE_SIGNALS)}")
    p.add_argument("--strategies", type=_strategy_names, default=None,
                   help=f"comma-separated, from {','.join(STRATEGIES)}; or 'paper' (the paper's ten), 'all' "
                        f"(default: the {len(DEFAULT_STRATEGIES)} of 'default', plus {','.join(CURVE_STRATEGIES)} "
                        "with --ranges rd)")
    p.add_argument("--ranges", default=None,
                   help=f"observed (paper's Phase 1; the default), rd (min/max of RD/DP allocations at --range-targets; the "
                        f"default with --reconstruct sparsegpt), preset (family auto-detected), preset:<family> "
                        f"({', '.join(available_presets())}), or a JSON range file")
    p.add_argument("--range-targets", type=_floats, default=(0.7, 0.8, 0.9),
                   help="global targets of the observed/rd-range runs (lower them for ViTs, e.g. 0.3,0.4,0.5)")
    p.add_argument("--calib-split", help="split to calibrate on (default: train)")
    p.add_argument("--eval-split", help="split to evaluate on (default: test, then validation)")
    p.add_argument("--calib-samples", type=int, default=256, help="calibration samples (from the training split)")
    p.add_argument("--eval-samples", type=int, default=None, help="evaluation samples (default: the whole split)")
    p.add_argument("--batch-size", type=int, default=64, help="calibration (scoring) batch size")
    p.add_argument("--eval-batch-size", type=int, default=None,
                   help="evaluation batch size (default: auto, the fastest per image of 64/128/256/512, probed "
                        "during the dense evaluation)")
    p.add_argument("--eval-resident", choices=("auto", "never"), default="auto",
                   help="auto: on a GPU, upload the selection and evaluation images once per run when they fit in a "
                        "quarter of the free GPU memory (every variant then reads them there); never: host batches")
    p.add_argument("--eval", choices=("racing", "full"), default="racing",
                   help="racing: evaluate every variant on a growing seeded sample and drop those beaten with "
                        "confidence by a variant at equal or higher sparsity (the front is unchanged); full: every "
                        "variant on the whole split")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                   help="autocast precision of evaluation and scoring forward passes (default: fp32, or the "
                        "mixed precision given to accelerate launch)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/evaluation subsampling")
    p.add_argument("--image-column", help="image column (default: auto-detected)")
    p.add_argument("--label-column", help="label column (default: auto-detected)")
    p.add_argument("--save", choices=("pareto", "all", "none"), default="pareto", help="which variant folders to write")
    p.add_argument("--grad-train-mode", action="store_true",
                   help="compute gradients in train mode (BatchNorm batch statistics, dropout on)")
    p.add_argument("--baselines", nargs="?", const="global_magnitude,uniform,uniform_plus,erk,lamp,snip,grasp,rd,wanda,sparsegpt",
                   type=_names, default=(),
                   help="also evaluate baseline allocators at the measured sparsity of each matched variant "
                        "(no value: all of global_magnitude,uniform,uniform_plus,erk,lamp,snip,grasp,rd,wanda,sparsegpt)")
    p.add_argument("--baseline-match", choices=("pareto", "all"), default="pareto",
                   help="match baselines to the Pareto variants or to every variant")
    p.add_argument("--rd-grid-step", type=float_in(0.0, 1.0, open_low=True), default=0.02, help="pruning-amount grid step of the RD curves")
    p.add_argument("--rd-reduction", choices=("mean", "worst"), default="mean",
                   help="RD distortion: mean over samples, or the worst sample (the paper's runs)")
    p.add_argument("--rd-distortion", choices=("magnitude", "sparsegpt"), default=None,
                   help="how a layer is pruned when --ranges rd measures its distortion curve: magnitude (the RD "
                        "paper) or sparsegpt (pruned and reconstructed, what --reconstruct sparsegpt variants pay; the "
                        "default with --reconstruct sparsegpt). The rd baseline always uses magnitude")
    p.add_argument("--finetune-steps", type=non_negative_int, help="fine-tune the front (and matched baselines) this many steps, "
                                                       "masks kept exact")
    p.add_argument("--finetune-epochs", type=non_negative_int, help="fine-tune this many epochs instead of --finetune-steps")
    p.add_argument("--finetune-lr", type=positive_float, default=1e-4)
    p.add_argument("--finetune-patience", type=positive_int, default=3, help="early stopping patience (evaluations)")
    p.add_argument("--finetune-samples", type=positive_int, default=2048,
                   help="training-split samples for fine-tuning (10%% held out for early stopping)")
    p.add_argument("--select-split", help="split the Pareto front is chosen on (default: validation when the dataset "
                                          "also has test, else a seeded held-out slice of the training split; "
                                          "'none': the evaluation split)")
    p.add_argument("--select-samples", type=int, help="selection samples (default: min(2000, available); held out "
                                                      "of the training split: at most a fifth of it)")
    p.add_argument("--label-map", metavar="FILE", help="JSON {dataset_name_or_index: model_index_or_name} when the "
                                                       "dataset's classes and the model's labels differ")
    p.add_argument("--skip-bad-images", action="store_true", help="skip (and count) undecodable images instead of "
                                                                   "stopping")
    p.add_argument("--data-cache-dir", help="where decoded images are cached (default: under HF_DATASETS_CACHE)")
    p.add_argument("--decode-workers", type=int, default=1, help="processes that decode images into the cache")
    p.add_argument("--reconstruct", choices=("none", "sparsegpt"), default="none",
                   help="layer-wise reconstruction (SparseGPT, exact per-layer counts) of the one-shot variants on the "
                        "first --reconstruct-depth non-dominated layers, and of every baseline")
    p.add_argument("--reconstruct-depth", type=int, default=2,
                   help="reconstruct the variants on this many one-shot non-dominated layers (1 = the front)")
    p.add_argument("--reconstruct-target", choices=("dense", "pruned"), default="dense",
                   help="what each reconstructed layer's outputs are fitted to: dense = the dense model's outputs "
                        "(corrects the error of the layers pruned before it; default), pruned = the layer's own dense "
                        "weights on the pruned model's inputs (SparseGPT's paper)")
    p.add_argument("--reconstruct-refit", type=non_negative_int, default=REFIT_DEFAULT, metavar="STEPS",
                   help="after SparseGPT, refit each layer's kept weights towards the least-squares optimum for "
                        "their mask with this many conjugate-gradient steps (0: SparseGPT's weights as they are)")
    p.add_argument("--bn-recalibrate", action=argparse.BooleanOptionalAction, default=True,
                   help="re-estimate the BatchNorm statistics of every pruned variant and baseline on the calibration "
                        "images (only buffers change; no effect on models without BatchNorm). Default: on")
    p.add_argument("--revision", help="model revision on the Hub")
    p.add_argument("--storage", choices=("dense", "compact"), default="dense",
                   help="variant weights: dense safetensors with exact zeros (drop-in for transformers/timm) or "
                        "compact (bitmask + nonzero values, shrinks with sparsity; load with hf_mixmatch.from_pretrained)")
    p.add_argument("--push-to", metavar="NAMESPACE", help="after the run, push the saved variants to this Hub namespace")
    p.add_argument("--private", action="store_true", help="with --push-to: create private repos")
    from .hub import add_push_naming

    add_push_naming(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_prune)


def quiet_progress() -> None:
    """Silence the progress bars of hf_mixmatch and the libraries it drives."""
    os.environ["HF_MIXMATCH_NO_PROGRESS"] = "1"
    import datasets
    import huggingface_hub
    import transformers

    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def cmd_prune(args) -> int:
    from .pipeline import PruneConfig, run_mixmatch

    if args.quiet:
        quiet_progress()

    config = PruneConfig(
        model=args.model, dataset=args.dataset, output_dir=args.output_dir, signals=args.signals,
        dataset_name=args.dataset_name,
        strategies=args.strategies, ranges=args.ranges, range_targets=args.range_targets,
        calib_split=args.calib_split, eval_split=args.eval_split, calib_samples=args.calib_samples,
        eval_samples=args.eval_samples, batch_size=args.batch_size, seed=args.seed, image_column=args.image_column,
        label_column=args.label_column, save=args.save, overwrite=args.overwrite, grad_train_mode=args.grad_train_mode,
        revision=args.revision, progress=not args.quiet, baselines=args.baselines,
        baseline_match=args.baseline_match, rd_grid_step=args.rd_grid_step, rd_reduction=args.rd_reduction,
        rd_distortion=args.rd_distortion,
        finetune_steps=args.finetune_steps, finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
        finetune_patience=args.finetune_patience, finetune_samples=args.finetune_samples, storage=args.storage,
        select_split=args.select_split, select_samples=args.select_samples, label_map=args.label_map,
        skip_bad_images=args.skip_bad_images, data_cache_dir=args.data_cache_dir, decode_workers=args.decode_workers,
        eval=args.eval, eval_batch_size=args.eval_batch_size, eval_resident=args.eval_resident,
        precision=args.precision,
        reconstruct=args.reconstruct, reconstruct_depth=args.reconstruct_depth, bn_recalibrate=args.bn_recalibrate,
        reconstruct_target=args.reconstruct_target, reconstruct_refit=args.reconstruct_refit,
    )
    run = run_mixmatch(config)
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(summary(run.results, run.output_dir))
        if args.push_to:
            from .hub import push_run

            push_run(run.output_dir, namespace=args.push_to, private=args.private, repo_prefix=args.repo_prefix,
                     force=args.force)
    return 0


def summary(results: dict, output_dir) -> str:
    """The one-screen summary printed at the end of a run."""
    from .report import images_seen_line, labels_line

    d = results["dense"]
    lines = [
        f"hf-mixmatch: {results['base_model']} on {results['dataset']} ({results['eval_split']}, "
        f"{results['eval_samples']} samples)",
        f"dense: top-1 {d['accuracy']:.4f}" + (f"  top-5 {d['top5']:.4f}" if d.get("top5") is not None else ""),
        *([labels_line(results)] if labels_line(results) else []),
        f"{len(results['variants'])} variants; Pareto front ({len(results['pareto'])}) chosen on "
        f"`{results.get('select_split') or results['eval_split']}`, measured on `{results['eval_split']}`:",
        f"  {'variant':38s} {'sparsity':>8s} {'top-1':>7s} {'drop':>7s} {'images':>7s}",
    ]
    by_id = {v["id"]: v for v in results["variants"]}
    for vid in results["pareto"]:
        v = by_id[vid]
        lines.append(f"  {vid:38s} {v['sparsity']:8.3f} {v['accuracy']:7.4f} {d['accuracy'] - v['accuracy']:+7.4f}"
                     f" {v.get('samples', results['eval_samples']):7d}")

    if results.get("evaluation"):
        lines.append(images_seen_line(results))
    lines.append(f"results: {output_dir}/results.json  report: {output_dir}/report.md")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one ``hf-mixmatch: error:`` line (exit 2), like every other failure."""

    def error(self, message):
        from .failure import PREFIX

        self.exit(2, f"{PREFIX} {self.prog.removeprefix('hf-mixmatch').strip() or 'hf-mixmatch'}: {message} "
                     f"(see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="hf-mixmatch",
        description="Mix-and-Match pruning for Hugging Face transformers and timm vision classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"hf-mixmatch {__version__}")
    parser.add_argument("--debug", "-v", "--verbose", dest="debug", action="store_true",
                        help="on failure show the full traceback; debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_prune_parser(sub)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    for command in sub.choices.values():  # --debug also after the command
        command.add_argument("--debug", dest="debug", action="store_true", default=argparse.SUPPRESS,
                             help="on failure show the full traceback; debug logs")
    return parser


def entry() -> None:
    """The ``hf-mixmatch`` console script and ``python -m hf_mixmatch``: run :func:`main` and exit with its code.
    An interrupted run was already reported in one line: leave with 130 at once, because a Ctrl-C that landed
    inside a module import leaves CPython believing the KeyboardInterrupt went unhandled, and it would end the
    process by SIGINT (-2) instead."""
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    from .failure import (check_interrupt, exit_code_for, install_sigint_handler, interrupt_deferred, interrupted,
                          restore_sigint_handler)

    previous = install_sigint_handler()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        with interrupt_deferred():  # the subcommands import torch: a Ctrl-C there is raised once it is loaded
            parser = build_parser()
        args = parser.parse_args(argv)
        debug = args.debug
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(message)s")
        if not args.debug:
            warnings.filterwarnings("default")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        code = int(args.func(args) or 0)
        check_interrupt()  # a Ctrl-C that a library swallowed still ends the command with 130
        return code
    except SystemExit as exc:  # argparse: --help, --version, or a bad option (already reported in one line)
        if interrupted():
            return exit_code_for(KeyboardInterrupt())
        if not exc.code:
            raise  # --help / --version
        return exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:  # noqa: BLE001 - every failure ends in one line and a known exit code
        if not isinstance(exc, Exception) and not isinstance(exc, KeyboardInterrupt):
            raise
        return exit_code_for(exc, debug=debug)
    finally:
        restore_sigint_handler(previous)


if __name__ == "__main__":
    sys.exit(main())
