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


def cifar_resnet(architecture: str = "resnet18", *, in_chans: int = 1, num_classes: int = 10,
                 channels=(16, 32, 64, 128), **kwargs) -> nn.Module:
    """A timm ResNet made CIFAR-style for small inputs (e.g. 28×28): the 7×7 stride-2 stem with 64 channels
    and its max-pool become a 3×3 stride-1 conv with ``channels[0]`` channels and no pooling, so the stages
    run at full, 1/2, 1/4 and 1/8 resolution and the (prunable) stages carry almost all the compute.
    Module names stay timm's (``conv1``, ``bn1``, ``layer1`` …). Build it with
    ``build_architecture("cifar_resnet", {...})`` so ``load_structured`` can rebuild it."""
    import timm

    channels = tuple(int(c) for c in channels)
    model = timm.create_model(architecture, pretrained=False, in_chans=in_chans, num_classes=num_classes,
                              channels=channels, **kwargs)
    width = channels[0]
    model.conv1 = nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    model.maxpool = nn.Identity()
    first = model.layer1[0]
    if first.conv1.in_channels != width:  # the first block read the old 64-channel stem: rebuild its input side
        first.conv1 = nn.Conv2d(width, first.conv1.out_channels, 3, stride=first.conv1.stride,
                                padding=1, bias=False)
        if first.downsample is not None and first.conv2.out_channels == width and first.conv1.stride == (1, 1):
            first.downsample = None
        elif first.downsample is not None:
            conv = first.downsample[0]
            first.downsample[0] = nn.Conv2d(width, conv.out_channels, 1, stride=conv.stride, bias=False)
    if hasattr(model, "feature_info"):
        model.feature_info[0] = dict(num_chs=width, reduction=1, module="act1")
    return model


def _cifar_resnet(**kwargs) -> nn.Module:
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return cifar_resnet(**kwargs)


register_architecture("cifar_resnet", _cifar_resnet)
