"""Run by tests/test_distributed.py, once with plain python and once under torchrun (2 processes)."""

import sys

from hf_mixmatch.pipeline import PruneConfig, run_mixmatch

model_dir, data_dir, out_dir = sys.argv[1:4]
run_mixmatch(PruneConfig(model=model_dir, dataset=data_dir, output_dir=out_dir, calib_samples=40, eval_samples=30,
                         batch_size=8, save="none", progress=False,
                         strategies=("conservative", "aggressive", "late_heavy")))
