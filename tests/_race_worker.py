"""Run by tests/test_racing.py, once with plain python and once under torchrun (2 processes): a racing run of
the embedded model on 800 images of its training split."""

import sys

from hf_mixmatch.pipeline import PruneConfig, run_mixmatch

run_mixmatch(PruneConfig(model="default", dataset="default", output_dir=sys.argv[1], eval_split="train",
                         calib_split="test", calib_samples=64, eval_samples=800, eval_batch_size=128, save="none", progress=False,
                         eval="racing", select_split="none", signals=("magnitude", "gradient"),
                         strategies=("conservative", "aggressive", "late_heavy", "percentile_30", "percentile_90",
                                     "signal_max")))
