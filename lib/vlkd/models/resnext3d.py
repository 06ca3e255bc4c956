"""The 3D-ResNeXt clip encoder of Sec. 4.2 (Hara et al., kenshohara/3D-ResNets-PyTorch), in plain torch.

Module names, widths and strides mirror the authors' `models/resnext.py` of the 2017-2018 releases (the same file
is in kenshohara/video-classification-3d-cnn-pytorch, whose feature mode HowTo100M's extractor used), so their
Kinetics checkpoints (`resnext-101-kinetics.pth`, ...) load as they are: shortcut type B (a 1x1x1 convolution +
batch norm on the first block of each stage), cardinality 32, bottleneck expansion 2, stage widths 128-1024.
Their 400-way Kinetics classifier `fc` is left out: the feature is the pooled 2048-d vector before it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from vlkd.errors import VlkdError

DEPTHS: dict[int, list[int]] = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
CARDINALITY = 32
EXPANSION = 2
STAGE_PLANES = (128, 256, 512, 1024)
FEATURE_DIM = STAGE_PLANES[-1] * EXPANSION

# What the checkpoints were trained on: RGB values in [0, 255] minus the ActivityNet mean, with no division by a
# std (the author, 3D-ResNets-PyTorch issues #7 and #12; `mean.py` + `Normalize(mean, [1, 1, 1])` of
# video-classification-3d-cnn-pytorch, whose `ToTensor` keeps 0-255, issue #63 there).
ACTIVITYNET_MEAN = (114.7748, 107.7354, 99.4750)

_CLASSIFIER_PREFIX = "fc."
_DATAPARALLEL_PREFIX = "module."


class ResNeXtBottleneck(nn.Module):
    """1x1x1 reduce -> 3x3x3 grouped (cardinality 32, carries the stride) -> 1x1x1 expand, plus the shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        mid_planes = CARDINALITY * (planes // 32)
        self.conv1 = nn.Conv3d(inplanes, mid_planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid_planes)
        self.conv2 = nn.Conv3d(
            mid_planes, mid_planes, kernel_size=3, stride=stride, padding=1, groups=CARDINALITY, bias=False
        )
        self.bn2 = nn.BatchNorm3d(mid_planes)
        self.conv3 = nn.Conv3d(mid_planes, planes * EXPANSION, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class ResNeXt3D(nn.Module):
    """3D-ResNeXt-{50,101,152}: clips [N, 3, T, H, W] (normalised as `ACTIVITYNET_MEAN` says) -> features [N, 2048].

    The features are the global average of the last stage. The authors pool with a fixed `AvgPool3d` of
    (ceil(T/16), ceil(H/32), ceil(W/32)), which is the global average for their 16-frame 112x112 clips; a global
    average keeps that meaning at any clip size."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"unknown 3D-ResNeXt depth {depth}; available: {', '.join(map(str, DEPTHS))}")
        self.depth = depth
        self.conv1 = nn.Conv3d(3, 64, kernel_size=7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        blocks = DEPTHS[depth]
        self.layer1 = _stage(64, STAGE_PLANES[0], blocks[0], stride=1)
        self.layer2 = _stage(STAGE_PLANES[0] * EXPANSION, STAGE_PLANES[1], blocks[1], stride=2)
        self.layer3 = _stage(STAGE_PLANES[1] * EXPANSION, STAGE_PLANES[2], blocks[2], stride=2)
        self.layer4 = _stage(STAGE_PLANES[2] * EXPANSION, STAGE_PLANES[3], blocks[3], stride=2)
        self._init_weights()

    def _init_weights(self) -> None:
        """As the authors initialise before training (only random-init encoders keep these values)."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(clips))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3, 4))


def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """One `layerN`: its first block changes width (and stride), so its shortcut is a projection (type B)."""
    downsample = nn.Sequential(
        nn.Conv3d(inplanes, planes * EXPANSION, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm3d(planes * EXPANSION),
    )
    first = ResNeXtBottleneck(inplanes, planes, stride, downsample)
    rest = [ResNeXtBottleneck(planes * EXPANSION, planes) for _ in range(1, blocks)]
    return nn.Sequential(first, *rest)


def load_kinetics_checkpoint(model: ResNeXt3D, path: str | Path) -> None:
    """Load a 3D-ResNets-PyTorch checkpoint into `model`, in place.

    The released files are `{'arch': 'resnext-101', 'state_dict': ..., ...}` saved from `nn.DataParallel`, so
    every key starts with 'module.'; a bare state dict (as HowTo100M's extractor loads) is accepted too. The
    classifier's `fc.*` keys are dropped. Anything else that does not fit is an error naming the keys."""
    checkpoint = _read(path)
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VlkdError(f"{path}: not a 3D-ResNets-PyTorch checkpoint (expected a dict with a 'state_dict')")
    _check_arch(checkpoint.get("arch"), model.depth, path)
    state = {k.removeprefix(_DATAPARALLEL_PREFIX): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIX)}
    problems = _mismatches(model, state)
    if problems:
        raise VlkdError(
            f"{path}: does not fit a 3D-ResNeXt-{model.depth} (shortcut B, cardinality 32): {'; '.join(problems)}. "
            "Give a ResNeXt checkpoint of kenshohara/3D-ResNets-PyTorch (e.g. resnext-101-kinetics.pth) and set "
            "encoder_3d.depth to its depth"
        )
    # A fresh dict has no version metadata, so BatchNorm fills in the `num_batches_tracked` that pre-0.4 files lack.
    model.load_state_dict(state)


def _read(path: str | Path) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise VlkdError(f"3D encoder weights {path} do not exist") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise VlkdError(f"{path}: not a readable PyTorch checkpoint ({exc})") from None
    if not isinstance(checkpoint, dict):
        raise VlkdError(f"{path}: not a 3D-ResNets-PyTorch checkpoint (holds a {type(checkpoint).__name__})")
    return checkpoint


def _check_arch(arch: object, depth: int, path: str | Path) -> None:
    """The released files name their model ('resnext-101'): catch a depth mismatch before a wall of key errors."""
    if arch is None or arch == f"resnext-{depth}":
        return
    name, _, size = str(arch).partition("-")
    hint = f"set encoder_3d.depth: {size}" if name == "resnext" and size.isdigit() else "give a ResNeXt checkpoint"
    raise VlkdError(f"{path}: a {arch} checkpoint, but encoder_3d.depth is {depth}: {hint}")


def _mismatches(model: nn.Module, state: dict[str, torch.Tensor], shown: int = 3) -> list[str]:
    """Missing, unexpected and wrongly shaped keys, a few of each by name."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    reshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    found = (("missing", missing), ("unexpected", unexpected), ("with another shape", reshaped))
    return [f"{len(keys)} {what} (e.g. {', '.join(keys[:shown])})" for what, keys in found if keys]
