"""Stage `preprocess`: videos + captions -> a `features` artifact (Sec. 4.2), with Ray Data.

Inputs are listed on the driver; videos are decoded in CPU tasks (by FFmpeg, or by NVDEC with `decoder: cuda`) and
encoded (2D + 3D, concatenated) in an actor pool sized from the spec's resources, each actor writing a video's
features to a run cache in the store; the driver then cuts videos into caption clips, writes the Parquet shards and
publishes. Every second of a video is encoded, however long it is; `max_frames` caps each clip (a training example),
and the manifest counts the clips it trimmed. Bad inputs are skipped and listed with the reason; the job fails only
when no clip is left, or when a worker cannot decode with the spec's decoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from vlkd import __version__
from vlkd.artifacts import ArtifactStore, Manifest
from vlkd.data import features as fmt
from vlkd.data.caption_ranges import CaptionRanges, count_captions
from vlkd.data.captions import Caption
from vlkd.data.ingest import configure_ray_data
from vlkd.data.skipped import SkippedInputs
from vlkd.data.video import SamplingPlan, VideoEnd, VideoError, check_decoder, decode_spans
from vlkd.errors import DataError, NotFoundError, VlkdError
from vlkd.inputs import InputFile, InputSource, fetch_weights, open_input
from vlkd.overlap import read_ahead
from vlkd.refs import ArtifactRef
from vlkd.runtime import JobContext, job_main
from vlkd.specs import Encoder2DSpec, Encoder3DSpec, PreprocessSpec
from vlkd.specs.data import VideoDecoder

log = logging.getLogger("vlkd.preprocess")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv")


@dataclass
class VideoInput:
    video_id: str
    path: str
    tag: str
    """changes when the file does, so a rerun on changed inputs does not reuse stale features"""
    sha256: str | None = None
    """the file's, when its source is an artifact: its decode task checks what it fetched against it"""


def _video_inputs(files: dict[str, InputFile]) -> dict[str, VideoInput]:
    """The video files by video id (the path without its suffix), in path order."""
    videos = {}
    for path, info in sorted(files.items()):
        if PurePosixPath(path).suffix.lower() in VIDEO_SUFFIXES:
            video_id = str(PurePosixPath(path).with_suffix(""))
            tag = hashlib.sha256(f"{path}:{info.size}:{info.sha256}".encode()).hexdigest()[:12]
            videos[video_id] = VideoInput(video_id, path, tag, info.sha256)
    return videos


def plan_inputs(
    source: InputSource, captions_path: str, scratch: Path, skipped: SkippedInputs
) -> tuple[list[VideoInput], CaptionRanges]:
    """Pair video files with their captions; everything that cannot be paired is a skipped item. The captions
    file is read a line at a time, twice (`vlkd.data.caption_ranges`): the driver holds a count per video, never
    the captions."""
    files = {f.path: f for f in source.files()}
    if captions_path not in files:
        raise NotFoundError(f"no captions file {captions_path!r} in {source.uri}; set `captions:` in the spec")
    videos = _video_inputs(files)
    local = source.local_path(captions_path)
    fetched = local is None
    if fetched:
        local = source.fetch(captions_path, scratch / "captions.jsonl")
    with local.open(encoding="utf-8", errors="replace") as lines:
        counts = count_captions(lines, lambda line, reason: skipped.add(f"{captions_path}:{line}", reason))
    for video_id, clips in sorted(counts.items()):
        if video_id not in videos:
            skipped.add(video_id, f"captions name a missing video ({clips} clips)")
    for video in videos.values():
        if video.video_id not in counts:
            skipped.add(video.path, "no captions")
    wanted = {video_id: clips for video_id, clips in counts.items() if video_id in videos}
    with local.open(encoding="utf-8", errors="replace") as lines:
        captions = CaptionRanges.spill(lines, wanted, scratch / "caption-ranges")
    if fetched:  # the ranges hold what is needed: local disk holds the captions once
        local.unlink()
    return [v for v in videos.values() if v.video_id in wanted], captions


def sampling_plan(spec: PreprocessSpec) -> SamplingPlan:
    return SamplingPlan(
        fps=spec.fps,
        size_2d=spec.encoder_2d.image_size,
        size_3d=spec.encoder_3d.image_size,
        input_fps_3d=spec.encoder_3d.input_fps,
        window=spec.encoder_3d.window,
    )


def fingerprint(spec: PreprocessSpec, source: InputSource) -> str:
    """The run cache's key: what its per-video features are made from (inputs, decoder, encoders, fps) and how they
    are cut into the cached spans (`span_features`: parts cut two ways must never be joined). Not what is applied
    when the clips are cut from them at publish time (`captions`, `max_frames`), nor the artifact name, shard size or
    resources: a rerun that changes only those reuses every encoded video."""
    keys = ("videos", "decoder", "encoder_2d", "encoder_3d", "fps", "span_features")
    settings = {k: v for k, v in spec.model_dump(mode="json").items() if k in keys}
    settings.update(source=source.uri, vlkd=__version__)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def decode_video_spans(
    batch: dict[str, np.ndarray], source: InputSource, plan: SamplingPlan, span: int, decoder: VideoDecoder
) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data task, one video per call: its spans, each yielded as a one-row batch as soon as it is decoded, so
    neither the task nor a row grows with the video's length; a failure ends the video with a row that has
    `reason`. A worker that cannot decode with `decoder` (checked once per process) fails the job instead: no
    video is at fault."""
    check_decoder(decoder)
    row = {key: str(values[0]) for key, values in batch.items()}
    local = source.local_path(row["path"])
    with tempfile.TemporaryDirectory(prefix="vlkd-decode-") as tmp:
        try:
            fetched = Path(tmp) / PurePosixPath(row["path"]).name
            local = local or source.fetch(row["path"], fetched, row["sha256"] or None)
            for piece in decode_spans(local, plan, span, decoder):
                if isinstance(piece, VideoEnd):
                    yield _row(row, plan, span=piece.spans, end=piece.duration)
                else:
                    yield _row(row, plan, span=piece.index, frames=(piece.frames_2d, piece.clips_3d))
        except (VideoError, VlkdError) as exc:
            yield _row(row, plan, reason=str(exc))


def _row(
    row: dict[str, str],
    plan: SamplingPlan,
    span: int = -1,
    frames: tuple[np.ndarray, np.ndarray] | None = None,
    end: float | None = None,
    reason: str = "",
) -> dict[str, np.ndarray]:
    """A one-row batch: a span with its frames, or the video's end (its span count and duration), or a failure."""
    if frames is None:
        frames = (
            np.zeros((0, plan.size_2d, plan.size_2d, 3), np.uint8),
            np.zeros((0, plan.window, plan.size_3d, plan.size_3d, 3), np.uint8),
        )
    return {
        **{key: np.array([value], dtype=object) for key, value in row.items()},
        "reason": np.array([reason], dtype=object),
        "span": np.array([span]),
        "end": np.array([end if end is not None else np.nan]),
        "frames_2d": frames[0][None],
        "clips_3d": frames[1][None],
    }


class EncodeVideos:
    """Ray Data actor: the frozen 2D and 3D encoders, loaded once per actor; writes each video's features."""

    def __init__(
        self, encoder_2d: Encoder2DSpec, encoder_3d: Encoder3DSpec, store: ArtifactStore, cache: fmt.PartCache
    ):
        import torch

        from vlkd.models.frame_encoders import build_2d_encoder, build_3d_encoder

        device = "cuda" if torch.cuda.is_available() else "cpu"
        # The encoders hold their weights once built: the downloaded copy goes (every actor of every job makes one).
        with tempfile.TemporaryDirectory(prefix="vlkd-weights-") as scratch:
            weights = [
                fetch_weights(e.weights, store, Path(scratch) / e.name)[0] if e.init == "pretrained" else None
                for e in (encoder_2d, encoder_3d)
            ]
            self.encode_2d = build_2d_encoder(encoder_2d, weights[0], device).encode
            self.encode_3d = build_3d_encoder(encoder_3d, weights[1], device).encode
        self.cache = cache

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Encode each span (a row) and cache its features; a video's end row records how many spans it has."""
        import torch

        reasons = list(batch["reason"])
        for i, video_id in enumerate(batch["video_id"]):
            if reasons[i]:
                continue
            span, tag = int(batch["span"][i]), batch["tag"][i]
            if not np.isnan(batch["end"][i]):
                self.cache.write_end(video_id, tag, span, float(batch["end"][i]))
                continue
            features_2d = self.encode_2d(torch.from_numpy(np.asarray(batch["frames_2d"][i])))
            features_3d = self.encode_3d(torch.from_numpy(np.asarray(batch["clips_3d"][i])))
            features = torch.cat([features_2d, features_3d], dim=1).numpy()
            if not np.isfinite(features.astype(np.float16)).all():  # stored as float16
                reasons[i] = f"encoder output does not fit float16 (max |x| = {np.abs(features).max():.3g})"
                continue
            self.cache.write_span(video_id, tag, span, features)
        return {"video_id": batch["video_id"], "path": batch["path"], "reason": np.array(reasons, dtype=object)}


def encode_videos(
    spec: PreprocessSpec, source: InputSource, cache: fmt.PartCache, context: JobContext, todo: list[VideoInput]
) -> dict[str, str]:
    """Decode and encode `todo` on Ray; return the videos that failed (their paths), with their reasons."""
    resources = spec.resources
    actors = max(1, resources.num_workers)
    context.start_ray(resources, extra_cpus=spec.driver_cpus)
    configure_ray_data(resources)
    import ray

    rows = [{"video_id": v.video_id, "path": v.path, "tag": v.tag, "sha256": v.sha256 or ""} for v in todo]
    unlisted = source.unlisted()  # each row names its file's sha256: no task carries the dataset's listing
    decode = partial(
        decode_video_spans, source=unlisted, plan=sampling_plan(spec), span=spec.span_features, decoder=spec.decoder
    )
    dataset = ray.data.from_items(rows).map_batches(decode, batch_size=1, num_cpus=spec.decode_cpus)
    dataset = dataset.map_batches(
        EncodeVideos,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=resources.cpus_per_worker,
        num_gpus=resources.gpus_per_worker,
        fn_constructor_kwargs={
            "encoder_2d": spec.encoder_2d,
            "encoder_3d": spec.encoder_3d,
            "store": context.store,
            "cache": cache,
        },
    )
    failed: dict[str, str] = {}
    for row in dataset.iter_rows():
        if row["reason"]:
            failed.setdefault(row["path"], row["reason"])  # a video whose spans fail is reported once
    return failed


def _pin(source: str | None, store: ArtifactStore) -> tuple[str | None, ArtifactRef | None]:
    """Pin an artifact-ref weights source to a version (actors must all load the same one)."""
    if source is None or "://" in source:
        return source, None
    pinned = store.resolve(source)
    return str(pinned), pinned


def run(spec: PreprocessSpec, context: JobContext) -> list[Manifest]:
    started = time.monotonic()
    store = context.store
    source = open_input(spec.videos, store)
    skipped = SkippedInputs(context.scratch / fmt.SKIPPED)
    videos, captions = plan_inputs(source, spec.captions, context.scratch, skipped)
    weights_2d, parent_2d = _pin(spec.encoder_2d.weights, store)
    weights_3d, parent_3d = _pin(spec.encoder_3d.weights, store)
    pinned = spec.model_copy(
        update={
            "encoder_2d": spec.encoder_2d.model_copy(update={"weights": weights_2d}),
            "encoder_3d": spec.encoder_3d.model_copy(update={"weights": weights_3d}),
        }
    )
    cache = fmt.PartCache(store.storage, f"cache/preprocess/{fingerprint(pinned, source)}")
    done = cache.completed()
    todo = [v for v in videos if (v.video_id, v.tag) not in done]
    log.info(
        "%d videos with captions, %d already encoded by an earlier run, %d to encode",
        len(videos),
        len(videos) - len(todo),
        len(todo),
    )
    for path, reason in (encode_videos(pinned, source, cache, context, todo) if todo else {}).items():
        skipped.add(path, reason)
    done = cache.completed()
    usable = {v.video_id: v for v in videos if (v.video_id, v.tag) in done}
    parents = [p for p in (source.ref, parent_2d, parent_3d) if p is not None]
    stats = {"reused_videos": len(videos) - len(todo), "seconds": time.monotonic() - started}
    inputs = Inputs(usable, captions, skipped)
    manifest = publish(pinned, context, inputs, (cache, done), parents, source.uri, stats)
    cache.clear()
    return [manifest]


@dataclass
class Trimmed:
    """What the cap on a clip's frames cost: the clips longer than `max_frames` and the seconds left out of them."""

    clips: int = 0
    seconds: float = 0.0


@dataclass
class Inputs:
    """What a run cuts clips from: the videos whose features are cached, by id, their captions, and what it
    left out so far."""

    usable: dict[str, VideoInput]
    captions: CaptionRanges
    skipped: SkippedInputs


def _clips_of(
    video_id: str,
    captions: list[Caption],
    features: np.ndarray,
    spec: PreprocessSpec,
    skipped: SkippedInputs,
    trimmed: Trimmed,
) -> list[fmt.Clip]:
    """A video's caption clips, wherever they sit in it. A clip longer than `max_frames` keeps its first
    `max_frames` frames (the paper truncates, Sec. 4.3), not frames spread over it: the teacher also keeps a clip's
    first `max_frames` (`clip_features`), so a clip trimmed here or at training time gives it the same frames, and
    kept frames stay 1/fps apart, the spacing the visual encoder's position embeddings learn."""
    clips = []
    for index, caption in enumerate(sorted(captions, key=lambda c: (c.start, c.end))):
        frames = fmt.clip_frames(caption.start, caption.end, spec.fps, len(features))
        if frames is None:
            item = f"{video_id}@{caption.start:g}-{caption.end:g}s"
            skipped.add(item, f"past the video's end (its {len(features)} features)")
            continue
        first, end = frames
        stop = min(end, first + spec.max_frames)
        if stop < end:
            trimmed.clips += 1
            trimmed.seconds += (end - stop) / spec.fps
        # A copy, not a view: a view would hold the whole video's features until the clip's shard is written.
        kept = features[first:stop].copy()
        clips.append(fmt.Clip(video_id, index, caption.start, caption.end, caption.text, kept))
    return clips


Cached = tuple[fmt.PartCache, dict[tuple[str, str], int]]
"""The run cache and its complete videos: (video id, tag) -> spans."""


PUBLISH_READS = 32
"""videos whose cached features the publish reads at once, ahead of the cut: one at a time, HowTo100M's 16M parts
on S3 (20-50 ms a request) would take days"""
PUBLISH_READ_BYTES = 512 << 20
"""what those reads may hold ahead of the cut (a 10-hour video's features are 184 MB at dim 2560)"""


def _write_shards(writer: fmt.FeaturesWriter, spec: PreprocessSpec, inputs: Inputs, cached: Cached) -> Trimmed:
    """Cut each usable video's features into its caption clips and write them, in video id order; return what
    `max_frames` trimmed. The driver holds the features of the videos read ahead (`PUBLISH_READS`, at most about
    `PUBLISH_READ_BYTES`: float16 at 1 fps and dim 2560 is 18 MB per hour of video), a range of captions and a
    shard of clips."""
    cache, spans = cached

    def key(item: tuple[str, list[Caption]]) -> tuple[str, str]:
        return item[0], inputs.usable[item[0]].tag

    def read_features(item: tuple[str, list[Caption]]) -> tuple[np.ndarray, float]:
        return cache.read(*key(item), spans[key(item)])

    def weight(item: tuple[str, list[Caption]]) -> float:
        return spans[key(item)] * spec.span_features * writer.index["feature_dim"] * 2 * 2  # float16, and a copy

    trimmed = Trimmed()
    usable = (item for item in inputs.captions.videos() if item[0] in inputs.usable)  # the others failed: skipped
    read = read_ahead(usable, read_features, PUBLISH_READS, PUBLISH_READ_BYTES, weight)
    for (video_id, captions), (features, duration) in read:
        clips = _clips_of(video_id, captions, features, spec, inputs.skipped, trimmed)
        writer.add_video(video_id, duration, len(features), clips)
    return trimmed


def publish(
    spec: PreprocessSpec,
    context: JobContext,
    inputs: Inputs,
    cached: Cached,
    parents: list[ArtifactRef],
    source_uri: str,
    stats: dict[str, float],
) -> Manifest:
    from vlkd.models.frame_encoders import ENCODER_DIMS

    dim_2d, dim_3d = ENCODER_DIMS[spec.encoder_2d.name], ENCODER_DIMS[spec.encoder_3d.name]
    with (
        context.store.draft("features", spec.name, context.job_id) as draft,
        fmt.FeaturesWriter(
            lambda path, local: draft.add_file(local, path),
            context.scratch,
            spec.shard_size,
            (dim_2d, dim_3d),
            spec.fps,
            spec.max_frames,
        ) as writer,
    ):
        trimmed = _write_shards(writer, spec, inputs, cached)
        counts, skipped = writer.counts, inputs.skipped
        if counts["clips"] == 0:
            reasons = "; ".join(skipped.reasons)
            raise DataError(f"no usable clips in {source_uri}: every input was skipped ({reasons})")
        writer.close(skipped.close())
        metrics = {
            **counts,
            "skipped": skipped.count,
            "trimmed_clips": trimmed.clips,
            "trimmed_seconds": round(trimmed.seconds, 3),
            "reused_videos": stats["reused_videos"],
            "seconds": round(stats["seconds"], 2),
            "videos_per_second": round(counts["videos"] / max(stats["seconds"], 1e-9), 3),
        }
        attributes = {
            "encoder_2d": spec.encoder_2d.model_dump(mode="json", include={"name", "init", "weights"}),
            "encoder_3d": spec.encoder_3d.model_dump(mode="json", include={"name", "init", "weights", "depth"}),
            "decoder": spec.decoder,  # NVDEC's pixels differ slightly from the CPU decoder's: another variant
            "random_init": "random" in (spec.encoder_2d.init, spec.encoder_3d.init),
            "pretrained": spec.encoder_2d.init == spec.encoder_3d.init == "pretrained",
            "source": source_uri,
            "feature_dim": dim_2d + dim_3d,
            "skipped": skipped.first,  # all of them are in skipped.jsonl
        }
        manifest = draft.commit(spec=spec, parents=parents, metrics=metrics, attributes=attributes, cost=context.cost())
    log.info(
        "%s: %d clips from %d videos (%d trimmed to max_frames %d, %g s left out), %d skipped",
        manifest.ref,
        counts["clips"],
        counts["videos"],
        trimmed.clips,
        spec.max_frames,
        metrics["trimmed_seconds"],
        skipped.count,
    )
    return manifest


if __name__ == "__main__":
    job_main("preprocess")
