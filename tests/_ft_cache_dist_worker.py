"""Run by tests/test_finetune_cache.py under torchrun (2 processes): fine-tune a tiny pruned ViT on the
memory-mapped fine-tuning samples and on the same tensors in RAM; the main process saves both weights."""

import dataclasses
import sys

import torch
from accelerate import Accelerator
from torch.utils.data import TensorDataset

from hf_mixmatch.data import load_data
from hf_mixmatch.datacache import CachedSplit, tensors_of
from hf_mixmatch.finetune import Finetuner, finetune
from hf_mixmatch.layers import list_prunable, weights_of
from hf_mixmatch.models import load_model
from hf_mixmatch.pipeline import PruneConfig

model_dir, data_dir, cache_dir, out_path = sys.argv[1:5]
torch.set_num_threads(1)
acc = Accelerator(cpu=True)
loaded = load_model(model_dir)
data = load_data(data_dir, loaded.preprocess, calib_samples=8, train_samples=40, seed=2, cache_dir=cache_dir)
assert isinstance(data.train, CachedSplit)
cfg = PruneConfig(model=model_dir, finetune_steps=4, finetune_samples=40, seed=2)
result = {"processes": acc.num_processes}
for what, d in (("cached", data), ("in_ram", dataclasses.replace(data, train=TensorDataset(*tensors_of(data.train))))):
    model = load_model(model_dir).model
    layers = list_prunable(model)
    with torch.no_grad():
        for w in weights_of(model, layers).values():
            w.view(-1)[w.abs().reshape(-1).argsort()[: w.numel() // 2]] = 0
    ft = Finetuner(cfg, model, layers, d, acc)
    res = finetune(model, layers, ft.train, ft.val, accelerator=acc, steps=4, lr=1e-3, batch_size=4, patience=10,
                   eval_every=1, seed=cfg.seed, progress=False)
    acc.free_memory()
    result[what] = {"history": res.history, "weights": {k: v.detach().clone() for k, v in model.state_dict().items()}}
if acc.is_main_process:
    torch.save(result, out_path)
acc.wait_for_everyone()
