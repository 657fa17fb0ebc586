"""Small reference architectures (plain torch) that can be rebuilt from a name and kwargs."""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import ModelLoadError

_ARCHS: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``factory(**kwargs)`` rebuildable by ``load_structured`` under ``name`` (no code is unpickled)."""
    _ARCHS[name] = factory


def build_architecture(name: str, kwargs: dict) -> nn.Module:
    if name not in _ARCHS:
        raise ModelLoadError(f"unknown torch architecture '{name}': register it with "
                             f"hf_mixmatch.structured.register_architecture (known: {sorted(_ARCHS)})")
    model = _ARCHS[name](**kwargs)
    model._hfmm_arch = (name, dict(kwargs))
    return model


def timm_model(architecture: str, **kwargs) -> nn.Module:
    """``timm.create_model(architecture, pretrained=False, **kwargs)`` that remembers its kwargs, so the
    structured recipe can rebuild it (e.g. a reduced-width ``resnet18`` with ``channels=(16, 32, 64, 128)``)."""
    import timm

    model = timm.create_model(architecture, pretrained=False, **kwargs)
    model._hfmm_timm_kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    return model


class ConvAutoencoder(nn.Module):
    """The paper's case: a conv encoder (two stride-2 convs) and a transposed-conv decoder, sigmoid output."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (32, 64), latent: int = 16):
        super().__init__()
        a, b = widths
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, a, 3, stride=2, padding=1), nn.BatchNorm2d(a), nn.ReLU(),
            nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU(),
            nn.Conv2d(b, latent, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(),
            nn.ConvTranspose2d(b, a, 4, stride=2, padding=1), nn.BatchNorm2d(a), nn.ReLU(),
            nn.ConvTranspose2d(a, a, 4, stride=2, padding=1), nn.BatchNorm2d(a), nn.ReLU(),
            nn.Conv2d(a, in_channels, 3, padding=1), nn.Sigmoid(),
        )

    def forward(self, x):
        return self.decoder(self.encoder(x))


def conv_autoencoder(**kwargs) -> nn.Module:
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return ConvAutoencoder(**kwargs)


register_architecture("conv_autoencoder", conv_autoencoder)
