"""The frozen 2D/3D frame encoders of Sec. 4.2, as real models with random init at small image sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlkd.errors import VlkdError
from vlkd.models.frame_encoders import ENCODER_DIMS, FrozenEncoder, build_2d_encoder, build_3d_encoder
from vlkd.models.resnext3d import DEPTHS, ResNeXt3D, load_kinetics_checkpoint
from vlkd.specs.data import Encoder2DSpec, Encoder3DSpec

SIZE_2D, SIZE_3D, WINDOW = 64, 32, 16


def random_2d(name: str, batch_size: int = 4) -> Encoder2DSpec:
    return Encoder2DSpec(name=name, image_size=SIZE_2D, init="random", batch_size=batch_size)


def random_3d() -> Encoder3DSpec:
    return Encoder3DSpec(depth=50, image_size=SIZE_3D, window=WINDOW, init="random", batch_size=4)


@pytest.fixture(scope="module")
def clip() -> FrozenEncoder:
    return build_2d_encoder(random_2d("clip-vit-b32"), None)


@pytest.fixture(scope="module")
def resnet() -> FrozenEncoder:
    return build_2d_encoder(random_2d("resnet152"), None)


@pytest.fixture(scope="module")
def resnext() -> FrozenEncoder:
    return build_3d_encoder(random_3d(), None)


def pixels(encoder: FrozenEncoder, count: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 input of the encoder's layout: frames [N, H, W, 3] or clips [N, T, H, W, 3]."""
    size = encoder.image_size
    shape = (count, size, size, 3) if encoder.frames_per_clip is None else (count, WINDOW, size, size, 3)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def assert_same_features(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to fp32 summation order (randomly initialised deep nets reach large magnitudes)."""
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max() <= 1e-4 * expected.abs().max()


def perturb(model: torch.nn.Module) -> None:
    """Move every float weight and statistic off the seeded random init, so a load that silently failed shows."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.mul_(torch.empty_like(tensor).uniform_(0.8, 1.2))


ENCODERS = ["clip", "resnet", "resnext"]


@pytest.mark.parametrize("fixture", ENCODERS)
def test_each_encoder_gives_one_float32_feature_of_its_dim_per_input(fixture, request):
    encoder = request.getfixturevalue(fixture)
    features = encoder.encode(pixels(encoder, 3))
    assert encoder.dim == ENCODER_DIMS[encoder.name]
    assert features.shape == (3, encoder.dim)
    assert features.dtype == torch.float32
    assert features.device.type == "cpu"
    assert torch.isfinite(features).all()


def test_feature_dims_are_those_of_the_paper_encoders():
    paper = {name: ENCODER_DIMS[name] for name in ("clip-vit-b32", "resnet152", "resnext3d")}
    assert paper == {"clip-vit-b32": 512, "resnet152": 2048, "resnext3d": 2048}
    assert ENCODER_DIMS["pixels"] == ENCODER_DIMS["pixel-motion"] == 8 * 8 * 3  # the demo encoders' colour grids


@pytest.mark.parametrize("fixture", ENCODERS)
def test_features_do_not_depend_on_batching(fixture, request, monkeypatch):
    encoder = request.getfixturevalue(fixture)
    inputs = pixels(encoder, 3)
    batched = encoder.encode(inputs)
    monkeypatch.setattr(encoder, "batch_size", 1)
    assert_same_features(encoder.encode(inputs), batched)
    assert_same_features(encoder.encode(inputs[1:2]), batched[1:2])


def test_encoding_is_deterministic(clip):
    inputs = pixels(clip, 2)
    assert torch.equal(clip.encode(inputs), clip.encode(inputs))


def test_random_init_is_the_same_in_every_build_and_leaves_the_global_rng_alone(clip):
    rng = torch.random.get_rng_state()
    again = build_2d_encoder(random_2d("clip-vit-b32"), None)
    assert torch.equal(torch.random.get_rng_state(), rng)
    expected = clip.model.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in again.model.state_dict().items())


@pytest.mark.parametrize("fixture", ENCODERS)
def test_encoders_are_frozen(fixture, request):
    encoder = request.getfixturevalue(fixture)
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())
    features = encoder.encode(pixels(encoder, 1))
    assert not features.requires_grad and features.grad_fn is None
    assert not features.is_inference()  # an ordinary tensor: callers may use it anywhere


@pytest.mark.parametrize(
    ("fixture", "scale", "mean", "std"),
    [
        ("clip", 1 / 255, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
        ("resnet", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ("resnext", 1.0, (114.7748, 107.7354, 99.4750), (1.0, 1.0, 1.0)),  # 0-255 minus ActivityNet mean, no std
    ],
)
def test_each_encoder_normalises_pixels_as_its_weights_were_trained(fixture, scale, mean, std, request):
    encoder = request.getfixturevalue(fixture)
    seen = []
    hook = encoder.model.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(args[0] if args else kwargs["pixel_values"]), with_kwargs=True
    )
    try:
        colour = torch.tensor([200, 100, 30], dtype=torch.uint8)
        encoder.encode(torch.zeros_like(pixels(encoder, 1)) + colour)
    finally:
        hook.remove()
    per_channel = seen[0].transpose(0, 1).reshape(3, -1)  # channels are dim 1 of [n, 3, ...] for every model
    expected = [(c * scale - m) / s for c, m, s in zip((200, 100, 30), mean, std, strict=True)]
    assert torch.allclose(per_channel, torch.tensor(expected).unsqueeze(1).expand_as(per_channel), atol=1e-4)


def test_frames_of_another_size_are_resized_to_the_encoder_size(resnet):
    frames = torch.randint(0, 256, (2, 48, 80, 3), dtype=torch.uint8)
    assert resnet.encode(frames).shape == (2, ENCODER_DIMS["resnet152"])


def test_no_inputs_give_no_features(resnext):
    assert resnext.encode(torch.zeros(0, WINDOW, SIZE_3D, SIZE_3D, 3, dtype=torch.uint8)).shape == (0, 2048)


@pytest.mark.parametrize(
    ("fixture", "bad"),
    [
        ("resnext", torch.zeros(1, 8, SIZE_3D, SIZE_3D, 3, dtype=torch.uint8)),  # not a 16-frame window
        ("resnet", torch.zeros(1, SIZE_2D, SIZE_2D, 3)),  # float, not uint8 pixels
        ("clip", torch.zeros(1, 3, SIZE_2D, SIZE_2D, dtype=torch.uint8)),  # channels first
    ],
)
def test_inputs_of_the_wrong_layout_are_refused(fixture, bad, request):
    with pytest.raises(ValueError, match="encodes uint8 RGB"):
        request.getfixturevalue(fixture).encode(bad)


def test_clip_image_size_must_be_a_multiple_of_its_patch_size():
    spec = Encoder2DSpec(name="clip-vit-b32", image_size=100, init="random")
    with pytest.raises(ValueError, match=r"image_size: clip-vit-b32 needs a multiple of its 32-pixel patches.*96"):
        build_2d_encoder(spec, None)


def test_a_pretrained_spec_without_weights_is_refused():
    with pytest.raises(ValueError, match="a pretrained resnet152 needs weights"):
        build_2d_encoder(Encoder2DSpec(name="resnet152", image_size=SIZE_2D), None)


def test_an_unknown_encoder_name_lists_the_known_ones():
    spec = Encoder2DSpec.model_construct(name="vgg16", init="random", image_size=SIZE_2D, batch_size=1)
    with pytest.raises(ValueError, match="unknown encoder 'vgg16'; available: clip-vit-b32, resnet152"):
        build_2d_encoder(spec, None)


@pytest.mark.parametrize("name", ["clip-vit-b32", "resnet152"])
def test_a_save_pretrained_directory_loads_as_2d_weights(name, tmp_path):
    source = build_2d_encoder(random_2d(name), None)
    perturb(source.model)
    source.model.save_pretrained(tmp_path)
    loaded = build_2d_encoder(Encoder2DSpec(name=name, image_size=SIZE_2D), str(tmp_path))
    frames = pixels(source, 2)
    assert_same_features(loaded.encode(frames), source.encode(frames))


def test_a_pretrained_clip_runs_at_another_image_size(clip, tmp_path):
    clip.model.save_pretrained(tmp_path)
    larger = build_2d_encoder(Encoder2DSpec(name="clip-vit-b32", image_size=2 * SIZE_2D), str(tmp_path))
    features = larger.encode(pixels(larger, 2))
    assert features.shape == (2, 512) and torch.isfinite(features).all()


def test_a_2d_weights_directory_of_another_size_is_refused(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, projection_dim=768
    )
    CLIPVisionModelWithProjection(config).save_pretrained(tmp_path)
    with pytest.raises(VlkdError, match="these weights give 768-d features, a clip-vit-b32 gives 512"):
        build_2d_encoder(Encoder2DSpec(name="clip-vit-b32", image_size=SIZE_2D), str(tmp_path))


def released_checkpoint(model: torch.nn.Module, path: Path, arch: str = "resnext-50") -> Path:
    """What 3D-ResNets-PyTorch saved: DataParallel's 'module.' keys, the Kinetics classifier, arch and epoch."""
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    state |= {"module.fc.weight": torch.randn(400, 2048), "module.fc.bias": torch.zeros(400)}
    torch.save({"arch": arch, "epoch": 200, "state_dict": state, "optimizer": {}}, path)
    return path


def test_the_3d_resnext_has_the_parameter_names_of_the_released_checkpoints():
    """Names and shapes as models/resnext.py of kenshohara/3D-ResNets-PyTorch builds them (ResNeXt-50 here)."""
    with torch.device("meta"):
        shapes = {key: tuple(value.shape) for key, value in ResNeXt3D(50).state_dict().items()}
    assert shapes["conv1.weight"] == (64, 3, 7, 7, 7)
    assert shapes["bn1.running_mean"] == (64,)
    assert shapes["layer1.0.conv1.weight"] == (128, 64, 1, 1, 1)
    assert shapes["layer1.0.conv2.weight"] == (128, 4, 3, 3, 3)  # grouped: 32 groups of 4 channels
    assert shapes["layer1.0.bn3.weight"] == (256,)
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1, 1)  # shortcut B: 1x1x1 conv + BN
    assert shapes["layer1.0.downsample.1.running_var"] == (256,)
    assert shapes["layer3.5.conv3.weight"] == (1024, 512, 1, 1, 1)
    assert shapes["layer4.0.downsample.0.weight"] == (2048, 1024, 1, 1, 1)
    assert shapes["layer4.2.bn3.num_batches_tracked"] == ()
    assert "layer1.1.downsample.0.weight" not in shapes  # only each stage's first block projects
    assert "layer3.6.conv1.weight" not in shapes
    assert not any(key.startswith("fc.") for key in shapes)  # the classifier is not part of the feature


@pytest.mark.parametrize("depth", sorted(DEPTHS))
def test_each_depth_has_the_released_block_counts(depth):
    with torch.device("meta"):
        keys = ResNeXt3D(depth).state_dict()
    blocks = [len({key.split(".")[1] for key in keys if key.startswith(f"layer{i}.")}) for i in range(1, 5)]
    assert blocks == {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}[depth]


def test_a_released_kinetics_checkpoint_loads_and_gives_its_features(resnext, tmp_path):
    source = build_3d_encoder(random_3d(), None)
    perturb(source.model)
    path = released_checkpoint(source.model, tmp_path / "resnext-50-kinetics.pth")
    spec = Encoder3DSpec(depth=50, image_size=SIZE_3D, window=WINDOW, weights=f"file://{path}")
    loaded = build_3d_encoder(spec, str(path))
    clips = pixels(source, 2)
    assert_same_features(loaded.encode(clips), source.encode(clips))
    assert not torch.allclose(loaded.encode(clips), resnext.encode(clips))  # the file's weights, not the seed's


def test_a_checkpoint_saved_before_pytorch_0_4_loads_without_num_batches_tracked(tmp_path):
    source = ResNeXt3D(50)
    perturb(source)
    state = {f"module.{k}": v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"arch": "resnext-50", "state_dict": state}, tmp_path / "old.pth")
    model = ResNeXt3D(50)
    load_kinetics_checkpoint(model, tmp_path / "old.pth")
    assert all(torch.equal(model.state_dict()[k.removeprefix("module.")], v) for k, v in state.items())


def test_a_checkpoint_that_does_not_fit_names_the_offending_keys(tmp_path):
    state = ResNeXt3D(50).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("layer4.2.")}
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    state["layer1.0.conv2.weight"] = torch.zeros(128, 128, 3, 3, 3)  # a 3D-ResNet's ungrouped convolution
    torch.save({"state_dict": state}, tmp_path / "other.pth")
    with pytest.raises(VlkdError) as error:
        load_kinetics_checkpoint(ResNeXt3D(50), tmp_path / "other.pth")
    message = str(error.value)
    assert "does not fit a 3D-ResNeXt-50" in message
    assert "missing (e.g. layer4.2.conv1.weight" in message
    assert "1 unexpected (e.g. layer5.0.conv1.weight)" in message
    assert "1 with another shape (e.g. layer1.0.conv2.weight (128, 128, 3, 3, 3) vs (128, 4, 3, 3, 3))" in message


def test_a_checkpoint_of_another_depth_says_which_depth_to_set(tmp_path):
    path = released_checkpoint(ResNeXt3D(50), tmp_path / "resnext-101-kinetics.pth", arch="resnext-101")
    with pytest.raises(VlkdError) as error:
        load_kinetics_checkpoint(ResNeXt3D(50), path)
    assert "a resnext-101 checkpoint, but encoder_3d.depth is 50: set encoder_3d.depth: 101" in str(error.value)


def test_a_missing_checkpoint_file_is_named(tmp_path):
    with pytest.raises(VlkdError, match=r"3D encoder weights .*nope\.pth do not exist"):
        load_kinetics_checkpoint(ResNeXt3D(50), tmp_path / "nope.pth")
