"""Run by tests/test_reconstruct_memory.py under torchrun (2 processes on one host): the memory pre-flight with one
process short of memory. ``argv[1]``: a folder; each process writes ``rank<i>.txt``, its outcome."""

import sys
from pathlib import Path

from accelerate import Accelerator
from torch import nn

from hf_mixmatch import reconstruct_stage
from hf_mixmatch.config import PruneConfig
from hf_mixmatch.errors import ConfigError
from hf_mixmatch.layers import list_prunable

acc = Accelerator(cpu=True)
model = nn.Sequential(nn.Linear(64, 8))
need = 4 * 64 * 64 * 8  # one process: 4 float64 (64 x 64) buffers
# two processes on this host need twice that: rank 0 has exactly enough, rank 1 one byte less
reconstruct_stage.available_memory = lambda: 2 * need - acc.process_index
config = PruneConfig(model="m", output_dir="unused", reconstruct="sparsegpt")
try:
    reconstruct_stage.check_memory(config, model, list_prunable(model), acc)
    outcome = "ok"
except ConfigError as e:
    outcome = f"error: {e}"
Path(sys.argv[1], f"rank{acc.process_index}.txt").write_text(outcome)
acc.wait_for_everyone()
