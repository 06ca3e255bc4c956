"""The frozen frame encoders of Sec. 4.2: a 2D image encoder per sampled frame (CLIP ViT-B/32 or ResNet-152) and
a 3D-ResNeXt per 16-frame clip, whose features the preprocess stage concatenates.

Encoders are registered by name; `build_2d_encoder` / `build_3d_encoder` take the spec and the weights that
`vlkd.inputs.fetch_weights` made loadable (None for `init: random`). Every encoder takes uint8 RGB pixels and does
its own normalisation, exactly as its weights were trained, so callers never need to know which one they hold.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from vlkd.errors import VlkdError
from vlkd.models.resnext3d import ACTIVITYNET_MEAN, ResNeXt3D, load_kinetics_checkpoint
from vlkd.specs.data import Encoder2DSpec, Encoder3DSpec

# Feature sizes by encoder name, so callers can lay out features without building a model.
ENCODER_DIMS: dict[str, int] = {
    "clip-vit-b32": 512,
    "resnet152": 2048,
    "resnext3d": 2048,
    "pixels": 192,
    "pixel-motion": 192,
}

CLIP_PATCH_SIZE = 32
# Random init (offline tests, demos) is seeded: every Ray actor must build the same encoder, or features of
# videos encoded by different actors would not be comparable.
RANDOM_INIT_SEED = 0


class FrameEncoder(Protocol):
    """What the preprocess stage needs of an encoder."""

    name: str
    dim: int

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 frames [N, H, W, 3] (2D) or clips [N, T, H, W, 3] (3D) -> float32 features [N, dim] on the CPU."""
        ...


@dataclass(frozen=True)
class PixelNorm:
    """How the weights' training pipeline fed pixels: `x * scale`, then `(x - mean) / std` per RGB channel."""

    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# openai/CLIP's `_transform` (and CLIPImageProcessor): [0, 1] then CLIP's own statistics.
CLIP_NORM = PixelNorm(1 / 255, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
# torchvision's and microsoft/resnet-152's ImageNet statistics on [0, 1].
IMAGENET_NORM = PixelNorm(1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# 3D-ResNets-PyTorch: [0, 255] minus the ActivityNet mean, no std (see `resnext3d.ACTIVITYNET_MEAN`).
RESNEXT3D_NORM = PixelNorm(1.0, ACTIVITYNET_MEAN, (1.0, 1.0, 1.0))

Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]
Builder = TypeVar("Builder")


class FrozenEncoder:
    """A pretrained network used as a fixed feature extractor (Sec. 3.2: its parameters are not updated).

    `forward(model, x)` maps normalised inputs [n, 3, size, size] (frames) or [n, T, 3, size, size] (clips) to
    features [n, dim]. Inputs go through in chunks of `batch_size`, under `torch.inference_mode`, in bf16 autocast
    on CUDA (fp16 where bf16 is unsupported) and in fp32 on the CPU."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        forward: Forward,
        norm: PixelNorm,
        image_size: int,
        batch_size: int,
        device: torch.device,
        frames_per_clip: int | None = None,
    ) -> None:
        self.name = name
        self.dim = ENCODER_DIMS[name]
        self.model = model.to(device).eval().requires_grad_(False)
        self._forward = forward
        self.image_size = image_size
        self.batch_size = batch_size
        self.device = device
        self.frames_per_clip = frames_per_clip
        self._mean = torch.tensor(norm.mean, device=device).view(3, 1, 1)
        self._std = torch.tensor(norm.std, device=device).view(3, 1, 1)
        self._scale = norm.scale

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 frames [N, H, W, 3] (2D) or clips [N, T, H, W, 3] (3D) -> float32 features [N, dim] on the CPU.

        Frames are expected at `image_size` (the decoder resizes them); other sizes are resized here."""
        self._check(pixels)
        chunks = [self._encode_chunk(chunk) for chunk in pixels.split(self.batch_size)]
        # Concatenated outside inference mode: callers get an ordinary tensor, usable anywhere.
        return torch.cat(chunks) if chunks else torch.empty(0, self.dim)

    def _check(self, pixels: torch.Tensor) -> None:
        layout = "[N, H, W, 3]" if self.frames_per_clip is None else f"[N, {self.frames_per_clip}, H, W, 3]"
        ndim = 4 if self.frames_per_clip is None else 5
        clip_ok = self.frames_per_clip is None or (pixels.ndim == 5 and pixels.shape[1] == self.frames_per_clip)
        if pixels.dtype != torch.uint8 or pixels.ndim != ndim or pixels.shape[-1] != 3 or not clip_ok:
            raise ValueError(
                f"{self.name} encodes uint8 RGB {layout}, got {pixels.dtype} {tuple(pixels.shape)}: decode with "
                "vlkd.data.video at this encoder's image_size and window"
            )

    def _encode_chunk(self, chunk: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), _autocast(self.device):
            features = self._forward(self.model, self._normalise(chunk.to(self.device)))
        return features.float().cpu()

    def _normalise(self, chunk: torch.Tensor) -> torch.Tensor:
        """uint8 [..., H, W, 3] -> float [..., 3, size, size], normalised as the weights expect."""
        lead, (height, width) = chunk.shape[:-3], chunk.shape[-3:-1]
        frames = chunk.reshape(-1, height, width, 3).permute(0, 3, 1, 2).float()
        frames = _fit(frames, self.image_size)
        frames = (frames * self._scale - self._mean) / self._std
        return frames.reshape(*lead, 3, self.image_size, self.image_size)


def _fit(frames: torch.Tensor, size: int) -> torch.Tensor:
    """[n, 3, H, W] -> [n, 3, size, size]: short side to `size`, then the centre square, as the decoder does."""
    height, width = frames.shape[-2:]
    if height == width == size:
        return frames
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    frames = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return frames[..., top : top + size, left : left + size]


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 on CUDA (fp16 on GPUs without bf16); plain fp32 on the CPU, where autocast would only cost precision."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _seeded(make: Callable[[], nn.Module]) -> nn.Module:
    """Build a randomly initialised model the same way in every process, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return make()


def _from_pretrained(model_class: Any, weights: str, name: str) -> nn.Module:
    """A save_pretrained directory or a hub id, in fp32 (autocast picks the compute precision)."""
    try:
        return model_class.from_pretrained(weights).float()
    except OSError as exc:
        raise VlkdError(
            f"cannot load {name} weights from {weights!r}: {exc}. Give a save_pretrained directory or a Hugging "
            "Face hub id (hf://ORG/NAME in the spec)"
        ) from None


def _check_dim(name: str, weights: str, actual: int) -> None:
    """Features of another size would silently break every later stage: a ViT-L/14 is not a ViT-B/32."""
    if actual != ENCODER_DIMS[name]:
        raise VlkdError(
            f"{weights}: these weights give {actual}-d features, a {name} gives {ENCODER_DIMS[name]}; give {name} "
            "weights or choose the encoder they belong to"
        )


def _clip_embeds(model: nn.Module, frames: torch.Tensor, *, interpolate: bool) -> torch.Tensor:
    """The projected image embedding, as CLIP's `encode_image` returns it (not L2-normalised)."""
    return model(pixel_values=frames, interpolate_pos_encoding=interpolate).image_embeds


def build_clip_vit_b32(spec: Encoder2DSpec, weights: str | None, device: torch.device) -> FrozenEncoder:
    """CLIP's ViT-B/32 image tower + projection (Sec. 4.2); a pretrained one at another image size interpolates its
    position embeddings."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if spec.image_size % CLIP_PATCH_SIZE:
        raise ValueError(
            f"encoder_2d.image_size: clip-vit-b32 needs a multiple of its {CLIP_PATCH_SIZE}-pixel patches, got "
            f"{spec.image_size} (e.g. {max(CLIP_PATCH_SIZE, spec.image_size // CLIP_PATCH_SIZE * CLIP_PATCH_SIZE)})"
        )
    if weights is None:
        # ViT-B/32 as openai/clip-vit-base-patch32 configures it, at the spec's image size.
        config = CLIPVisionConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            patch_size=CLIP_PATCH_SIZE,
            image_size=spec.image_size,
            projection_dim=ENCODER_DIMS[spec.name],
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        )
        model = _seeded(partial(CLIPVisionModelWithProjection, config))
    else:
        model = _from_pretrained(CLIPVisionModelWithProjection, weights, spec.name)
        _check_dim(spec.name, weights, model.config.projection_dim)
    forward = partial(_clip_embeds, interpolate=spec.image_size != model.config.image_size)
    return FrozenEncoder(spec.name, model, forward, CLIP_NORM, spec.image_size, spec.batch_size, device)


def _resnet_pooled(model: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """The globally average-pooled last stage [n, 2048, 1, 1], flattened: the input of ImageNet's classifier."""
    return model(pixel_values=frames).pooler_output.flatten(1)


def build_resnet152(spec: Encoder2DSpec, weights: str | None, device: torch.device) -> FrozenEncoder:
    """ImageNet-1K ResNet-152 (Sec. 4.2), as transformers' `ResNetModel` (microsoft/resnet-152)."""
    from transformers import ResNetConfig, ResNetModel

    if weights is None:
        config = ResNetConfig(
            layer_type="bottleneck", depths=[3, 8, 36, 3], hidden_sizes=[256, 512, 1024, 2048], embedding_size=64
        )
        model = _seeded(partial(ResNetModel, config))
        _zero_init_residuals(model)
    else:
        model = _from_pretrained(ResNetModel, weights, spec.name)
        _check_dim(spec.name, weights, model.config.hidden_sizes[-1])
    return FrozenEncoder(spec.name, model, _resnet_pooled, IMAGENET_NORM, spec.image_size, spec.batch_size, device)


def _zero_init_residuals(model: nn.Module) -> None:
    """Start each bottleneck's residual branch at zero (torchvision's `zero_init_residual`). Random BatchNorm
    statistics in eval mode otherwise let 50 stacked blocks grow activations to ~1e7, past float16, in which the
    features are stored."""
    from transformers.models.resnet.modeling_resnet import ResNetBottleNeckLayer

    for module in model.modules():
        if isinstance(module, ResNetBottleNeckLayer):
            nn.init.zeros_(module.layer[-1].normalization.weight)


def _resnext_pooled(model: nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """[n, T, 3, s, s] -> [n, 2048]: the model wants channels before time."""
    return model(clips.transpose(1, 2))


def build_resnext3d(spec: Encoder3DSpec, weights: str | None, device: torch.device) -> FrozenEncoder:
    """3D-ResNeXt-{50,101,152} on `window`-frame clips (Sec. 4.2), from a 3D-ResNets-PyTorch checkpoint file."""
    model = _seeded(partial(ResNeXt3D, spec.depth))
    if weights is not None:
        load_kinetics_checkpoint(model, weights)
    return FrozenEncoder(
        spec.name, model, _resnext_pooled, RESNEXT3D_NORM, spec.image_size, spec.batch_size, device, spec.window
    )


class PixelGrid(nn.Module):
    """Parameter-free demo encoder (not in the paper): a frame [n, 3, s, s] as its 8x8 grid of mean colours
    [n, 192], which keeps what a synthetic frame shows (colours, positions) for a demo teacher to learn from."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(frames, 8).flatten(1)


class PixelMotion(nn.Module):
    """Parameter-free demo clip encoder (not in the paper): the change from a window's first to last frame on an
    8x8 colour grid [n, 192], a crude motion signal."""

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(clips[:, -1] - clips[:, 0], 8).flatten(1)


# Pixels on [0, 1], centred: the demo encoders' features then sit near unit scale.
PIXEL_NORM = PixelNorm(1 / 255, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _call(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    return model(pixels)


def build_pixels(spec: Encoder2DSpec, weights: str | None, device: torch.device) -> FrozenEncoder:
    return FrozenEncoder(spec.name, PixelGrid(), _call, PIXEL_NORM, spec.image_size, spec.batch_size, device)


def build_pixel_motion(spec: Encoder3DSpec, weights: str | None, device: torch.device) -> FrozenEncoder:
    return FrozenEncoder(
        spec.name, PixelMotion(), _call, PIXEL_NORM, spec.image_size, spec.batch_size, device, spec.window
    )


Build2D = Callable[[Encoder2DSpec, str | None, torch.device], FrozenEncoder]
Build3D = Callable[[Encoder3DSpec, str | None, torch.device], FrozenEncoder]

ENCODERS_2D: dict[str, Build2D] = {
    "clip-vit-b32": build_clip_vit_b32,
    "resnet152": build_resnet152,
    "pixels": build_pixels,
}
ENCODERS_3D: dict[str, Build3D] = {"resnext3d": build_resnext3d, "pixel-motion": build_pixel_motion}


def build_2d_encoder(spec: Encoder2DSpec, weights: str | None, device: str | torch.device = "cpu") -> FrozenEncoder:
    """The frame encoder `spec.name`, from `weights` (a save_pretrained directory or a hub id; None when
    `spec.init` is random)."""
    return _registered(ENCODERS_2D, spec.name, "encoder_2d")(spec, _checked(spec, weights), torch.device(device))


def build_3d_encoder(spec: Encoder3DSpec, weights: str | None, device: str | torch.device = "cpu") -> FrozenEncoder:
    """The clip encoder `spec.name`, from `weights` (a 3D-ResNets-PyTorch .pth file; None when `spec.init` is
    random)."""
    return _registered(ENCODERS_3D, spec.name, "encoder_3d")(spec, _checked(spec, weights), torch.device(device))


def _registered(registry: dict[str, Builder], name: str, field: str) -> Builder:
    if name not in registry:
        raise ValueError(f"{field}.name: unknown encoder {name!r}; available: {', '.join(registry)}")
    return registry[name]


def _checked(spec: Encoder2DSpec | Encoder3DSpec, weights: str | None) -> str | None:
    """Weights exactly when the spec asks for a pretrained encoder: never a silent random one."""
    if (spec.init == "pretrained") != (weights is not None):
        wanted = "needs weights" if spec.init == "pretrained" else "takes no weights"
        raise ValueError(f"a {spec.init} {spec.name} {wanted}, got weights={weights!r}")
    return weights
