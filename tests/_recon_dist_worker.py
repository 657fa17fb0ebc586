"""Run by tests/test_reconstruct.py: SparseGPT on a tiny ViT with plain python or under torchrun (2 processes).

``argv[3]``: the reconstruction target (dense | pruned); ``argv[4]``: the refit's steps. Writes the reconstructed
prunable weights, the logits on the calibration images and the activation scores (main process) to ``argv[2]``."""

import sys

import torch
from accelerate import Accelerator

from hf_mixmatch.activations import activation_scores
from hf_mixmatch.layers import list_prunable
from hf_mixmatch.models import load_model
from hf_mixmatch.reconstruct import ReconstructSettings, reconstruct

model_dir, out_path, target, refit = sys.argv[1:5]
torch.manual_seed(0)
acc = Accelerator(cpu=True)
model = load_model(model_dir).model.eval()
layers = list_prunable(model)
x = torch.randn(20, 3, 16, 16)  # same on every process: each takes its share of the batches
act = activation_scores(model, layers, x, batch_size=4, accelerator=acc)["activation"]
sparsities = {layer.name: 0.3 + 0.6 * i / len(layers) for i, layer in enumerate(layers)}
reconstruct(model, layers, sparsities, x, settings=ReconstructSettings(batch_size=4, blocksize=16, target=target, refit=int(refit)),
            accelerator=acc)
if acc.is_main_process:
    with torch.no_grad():
        logits = model(x).logits
    torch.save({"processes": acc.num_processes, "activation": act, "logits": logits,
                "weights": {layer.name: model.get_submodule(layer.name).weight.detach().clone() for layer in layers}},
               out_path)
acc.wait_for_everyone()
