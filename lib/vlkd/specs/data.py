"""Specs of the data stages: videos -> frame features (`preprocess`), corpus -> tokenizer + shards (`text`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from vlkd.specs.base import DataSource, StageSpec, StrictModel, TokenizerRef, WeightsSource

# Where pretrained weights come from when the spec names none (needs internet on the cluster).
DEFAULT_WEIGHTS: dict[str, str | None] = {
    "clip-vit-b32": "hf://openai/clip-vit-base-patch32",
    "resnet152": "hf://microsoft/resnet-152",
    "resnext3d": None,  # the Kinetics checkpoints of kenshohara/3D-ResNets-PyTorch are not on a hub
}
# Parameter-free encoders for offline demos and tests (not in the paper): random-weight deep networks scramble
# what synthetic frames show, these keep it, so a demo teacher has something to learn.
PARAMETER_FREE = ("pixels", "pixel-motion")
VideoDecoder = Literal["cpu", "cuda"]
"""Who decodes preprocess's videos: FFmpeg's software decoders, or NVDEC through PyAV's CUDA hwaccel."""


class _EncoderSpec(StrictModel):
    name: str
    init: Literal["pretrained", "random", "none"] = Field(
        "pretrained",
        description="random: offline tests and demos only, recorded in the manifest; none: parameter-free encoders",
    )
    weights: WeightsSource | None = None
    batch_size: int = Field(64, gt=0, description="frames (2D) or clips (3D) per forward pass")

    @model_validator(mode="after")
    def _weights_for_pretrained(self) -> _EncoderSpec:
        if self.name in PARAMETER_FREE:
            if self.weights is not None or self.init == "random":
                raise ValueError(f"{self.name} has no parameters: remove weights and init")
            self.init = "none"
            return self
        if self.init == "none":
            raise ValueError(f"init: none is for parameter-free encoders ({', '.join(PARAMETER_FREE)})")
        if self.init == "pretrained" and self.weights is None:
            self.weights = DEFAULT_WEIGHTS[self.name]
            if self.weights is None:
                raise ValueError(
                    f"weights: required for a pretrained {self.name}: give a URI or weights/NAME ref of the "
                    "checkpoint (or set init: random for a demo)"
                )
        return self


class Encoder2DSpec(_EncoderSpec):
    """The frame-level image encoder, run on frames sampled at `PreprocessSpec.fps` (Sec. 4.2)."""

    name: Literal["clip-vit-b32", "resnet152", "pixels"] = "clip-vit-b32"
    image_size: int = Field(224, gt=0)


class Encoder3DSpec(_EncoderSpec):
    """The 3D-ResNeXt clip encoder: `window` frames at `input_fps` per feature, i.e. 24/16 = 1.5 features
    per second, sub-sampled to the 2D stream's rate (Sec. 4.2)."""

    name: Literal["resnext3d", "pixel-motion"] = "resnext3d"
    depth: Literal[50, 101, 152] = Field(
        101,
        description="the paper names 3D-ResNeXt-152 (Sec. 4.2); the public Kinetics checkpoint of "
        "kenshohara/3D-ResNets-PyTorch is ResNeXt-101 (resnext-101-kinetics.pth)",
    )
    input_fps: float = Field(24.0, gt=0)
    window: int = Field(16, gt=0, description="frames per 3D feature")
    image_size: int = Field(112, gt=0)

    @model_validator(mode="after")
    def _weights_are_a_checkpoint_file(self) -> Encoder3DSpec:
        if self.name == "resnext3d" and self.weights is not None and self.weights.startswith("hf://"):
            raise ValueError(
                "resnext3d weights are a 3D-ResNets-PyTorch .pth checkpoint, which no hub hosts: import the file "
                "(`vlkd artifacts push weights/resnext3d-101-kinetics resnext-101-kinetics.pth`) and name that "
                "ref, or an s3:// or file:// path"
            )
        return self


class PreprocessSpec(StageSpec):
    """Videos + captions -> per-clip frame features (concat of 2D and 3D encoders, 1 feature per second)."""

    stage: Literal["preprocess"] = "preprocess"
    outputs: ClassVar[tuple[str, ...]] = ("features",)

    videos: DataSource = Field(description="folder/prefix with video files (mp4, webm, mkv) and captions")
    captions: str = Field("captions.jsonl", description="JSON Lines (video_id, start, end, text), in `videos`")
    encoder_2d: Encoder2DSpec = Encoder2DSpec()
    encoder_3d: Encoder3DSpec = Field(description="needs weights (or init: random): no hub hosts them")
    fps: float = Field(1.0, gt=0, description="feature rate; 1 fps in the paper (Sec. 4.2)")
    max_frames: int = Field(
        512,
        gt=0,
        description="frames kept per clip, its first ones (the paper truncates at 512, Sec. 4.3); every second of a "
        "video is encoded, and the manifest counts the clips trimmed (metrics.trimmed_clips, trimmed_seconds)",
    )
    shard_size: int = Field(256, gt=0, description="clips per Parquet shard")
    decode_cpus: float = Field(1.0, gt=0, description="CPUs per decoding task")
    decoder: VideoDecoder = Field(
        "cpu",
        description="cuda: NVDEC (PyAV's CUDA hwaccel) on the decoding workers' GPU, its frames downloaded to host "
        "memory for the same resize and crop; its pixels differ slightly from the CPU decoder's, so its features are "
        "another variant (the manifest records `attributes.decoder`). The job stops at its first video if a worker "
        "cannot decode with it. The default stays cpu until a GPU run measures NVDEC against it (bench/decode.py)",
    )
    span_features: int = Field(
        32,
        gt=0,
        description="a video is decoded and encoded in spans of this many features (seconds at 1 fps), a Ray Data "
        "row each, so a row's memory is bounded whatever the video's length",
    )

    @property
    def driver_cpus(self) -> float:
        """One decoding task at a time beside the encoders (`decode_cpus`)."""
        return self.decode_cpus


class TokenizerSpec(StrictModel):
    """Which BERT uncased WordPiece vocabulary to use: train one on the corpus (default), load a given
    vocab file (e.g. bert-base-uncased's vocab.txt), or reuse a tokenizer artifact."""

    vocab: WeightsSource | None = Field(None, description="URI or weights ref of a vocab.txt")
    artifact: TokenizerRef | None = None
    vocab_size: int = Field(30522, gt=0, description="when training; bert-base-uncased's size")
    min_frequency: int = Field(2, gt=0)
    lowercase: bool = True

    @model_validator(mode="after")
    def _one_source(self) -> TokenizerSpec:
        if self.vocab is not None and self.artifact is not None:
            raise ValueError("give either vocab or artifact, not both")
        return self


class TextSpec(StageSpec):
    """A text corpus -> a tokenizer artifact and a corpus artifact of token shards (both named `name`)."""

    stage: Literal["text"] = "text"
    outputs: ClassVar[tuple[str, ...]] = ("tokenizer", "corpus")

    corpus: DataSource = Field(
        description="lines: plain text files, one paragraph or sentence per line (Wiki103 layout); captions: a "
        "videos folder as `preprocess` reads it"
    )
    format: Literal["lines", "captions"] = Field(
        "lines",
        description="captions: the corpus is the `captions` file of a videos folder, each video's captions in time "
        "order one paragraph (the HowTo100M captions corpus of Table 2)",
    )
    captions: str = Field(
        PreprocessSpec.model_fields["captions"].default,
        description="format captions: JSON Lines (video_id, start, end, text) in `corpus`, as `preprocess` reads it",
    )
    tokenizer: TokenizerSpec = TokenizerSpec()
    max_len: int = Field(128, gt=2, description="tokens per sequence incl. [CLS]/[SEP]; Sec. 4.3")
    pack: bool = Field(True, description="pack consecutive sentences up to max_len (else one per sequence)")
    val_size: int = Field(
        10_000,
        ge=0,
        description="held-out sequences (the paper holds out 10K clips of HowTo100M; it gives no size for text)",
    )
    shard_size: int = Field(100_000, gt=0, description="sequences per shard")

    @model_validator(mode="after")
    def _captions_need_their_format(self) -> TextSpec:
        if self.format == "lines" and self.captions != type(self).model_fields["captions"].default:
            raise ValueError("captions: is read only with format: captions (a videos folder): add format: captions")
        return self

    @property
    def driver_cpus(self) -> float:
        """Ray Data's tokenising tasks and the driver: the text stage has no workers of its own."""
        return 2.0
