"""Stage `preprocess`: videos + captions -> a `features` artifact (Sec. 4.2), with Ray Data.

Inputs are listed on the driver; videos are decoded in CPU tasks and encoded (2D + 3D, concatenated) in an
actor pool sized from the spec's resources, each actor writing a video's features to a run cache in the store;
the driver then cuts videos into caption clips, writes the Parquet shards and publishes. Bad inputs are
skipped and listed with the reason; the job fails only when no clip is left.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from vlkd import __version__
from vlkd.artifacts import ArtifactStore, Draft, Manifest
from vlkd.data import features as fmt
from vlkd.data.captions import Caption, parse_captions
from vlkd.data.video import SamplingPlan, VideoError, decode_video
from vlkd.errors import DataError, NotFoundError, VlkdError
from vlkd.inputs import InputSource, fetch_weights, open_input
from vlkd.refs import ArtifactRef
from vlkd.runtime import JobContext, job_main
from vlkd.specs import Encoder2DSpec, Encoder3DSpec, PreprocessSpec

log = logging.getLogger("vlkd.preprocess")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv")


@dataclass
class VideoInput:
    video_id: str
    path: str
    tag: str
    """changes when the file does, so a rerun on changed inputs does not reuse stale features"""
    captions: list[Caption] = field(default_factory=list)


def plan_inputs(source: InputSource, captions_path: str) -> tuple[list[VideoInput], list[dict[str, str]]]:
    """Pair video files with their captions; everything that cannot be paired is a skipped item."""
    files = {f.path: f for f in source.files()}
    if captions_path not in files:
        raise NotFoundError(f"no captions file {captions_path!r} in {source.uri}; set `captions:` in the spec")
    captions, problems = parse_captions(source.read_bytes(captions_path).decode().splitlines())
    skipped = [{"item": f"{captions_path}:{line}", "reason": reason} for line, reason in problems]
    videos: dict[str, VideoInput] = {}
    for path, info in sorted(files.items()):
        if PurePosixPath(path).suffix.lower() in VIDEO_SUFFIXES:
            video_id = str(PurePosixPath(path).with_suffix(""))
            tag = hashlib.sha256(f"{path}:{info.size}:{info.sha256}".encode()).hexdigest()[:12]
            videos[video_id] = VideoInput(video_id, path, tag)
    orphans: dict[str, int] = {}
    for caption in captions:
        if caption.video_id in videos:
            videos[caption.video_id].captions.append(caption)
        else:
            orphans[caption.video_id] = orphans.get(caption.video_id, 0) + 1
    skipped += [{"item": v, "reason": f"captions name a missing video ({n} clips)"} for v, n in sorted(orphans.items())]
    skipped += [{"item": v.path, "reason": "no captions"} for v in videos.values() if not v.captions]
    return [v for v in videos.values() if v.captions], skipped


def sampling_plan(spec: PreprocessSpec) -> SamplingPlan:
    return SamplingPlan(
        fps=spec.fps,
        max_frames=spec.max_frames,
        size_2d=spec.encoder_2d.image_size,
        size_3d=spec.encoder_3d.image_size,
        input_fps_3d=spec.encoder_3d.input_fps,
        window=spec.encoder_3d.window,
    )


def fingerprint(spec: PreprocessSpec, source: InputSource) -> str:
    """What determines the features (not the artifact name, shard size or resources)."""
    keys = ("videos", "captions", "encoder_2d", "encoder_3d", "fps", "max_frames")
    settings = {k: v for k, v in spec.model_dump(mode="json").items() if k in keys}
    settings.update(source=source.uri, vlkd=__version__)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def decode_row(row: dict[str, Any], source: InputSource, plan: SamplingPlan) -> dict[str, Any]:
    """Ray Data task: decode one video; a failure becomes a row with `reason` and empty arrays."""
    local = source.local_path(row["path"])
    with tempfile.TemporaryDirectory(prefix="vlkd-decode-") as tmp:
        try:
            local = local or source.fetch(row["path"], Path(tmp) / PurePosixPath(row["path"]).name)
            video = decode_video(local, plan)
            return {
                **row,
                "reason": "",
                "duration": video.duration,
                "frames_2d": video.frames_2d,
                "clips_3d": video.clips_3d,
            }
        except (VideoError, VlkdError) as exc:
            empty_2d = np.zeros((0, plan.size_2d, plan.size_2d, 3), np.uint8)
            empty_3d = np.zeros((0, plan.window, plan.size_3d, plan.size_3d, 3), np.uint8)
            return {**row, "reason": str(exc), "duration": 0.0, "frames_2d": empty_2d, "clips_3d": empty_3d}


class EncodeVideos:
    """Ray Data actor: the frozen 2D and 3D encoders, loaded once per actor; writes each video's features."""

    def __init__(
        self, encoder_2d: Encoder2DSpec, encoder_3d: Encoder3DSpec, store: ArtifactStore, cache: fmt.PartCache
    ):
        import torch

        from vlkd.models.frame_encoders import build_2d_encoder, build_3d_encoder

        device = "cuda" if torch.cuda.is_available() else "cpu"
        scratch = Path(tempfile.mkdtemp(prefix="vlkd-weights-"))
        weights = [
            fetch_weights(e.weights, store, scratch / e.name)[0] if e.init == "pretrained" else None
            for e in (encoder_2d, encoder_3d)
        ]
        self.encode_2d = build_2d_encoder(encoder_2d, weights[0], device).encode
        self.encode_3d = build_3d_encoder(encoder_3d, weights[1], device).encode
        self.cache = cache

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import torch

        reasons = list(batch["reason"])
        for i, video_id in enumerate(batch["video_id"]):
            if reasons[i]:
                continue
            features_2d = self.encode_2d(torch.from_numpy(np.asarray(batch["frames_2d"][i])))
            features_3d = self.encode_3d(torch.from_numpy(np.asarray(batch["clips_3d"][i])))
            features = torch.cat([features_2d, features_3d], dim=1).numpy()
            if not np.isfinite(features.astype(np.float16)).all():  # stored as float16
                reasons[i] = f"encoder output does not fit float16 (max |x| = {np.abs(features).max():.3g})"
                continue
            self.cache.write(video_id, batch["tag"][i], features, float(batch["duration"][i]))
        return {"video_id": batch["video_id"], "path": batch["path"], "reason": np.array(reasons, dtype=object)}


def encode_videos(
    spec: PreprocessSpec, source: InputSource, cache: fmt.PartCache, context: JobContext, todo: list[VideoInput]
) -> list[dict[str, str]]:
    """Decode and encode `todo` on Ray; return the videos that failed, with their reasons."""
    resources = spec.resources
    actors = max(1, resources.num_workers)
    context.start_ray(resources, extra_cpus=spec.decode_cpus)
    import ray

    rows = [{"video_id": v.video_id, "path": v.path, "tag": v.tag} for v in todo]
    dataset = ray.data.from_items(rows).map(
        partial(decode_row, source=source, plan=sampling_plan(spec)), num_cpus=spec.decode_cpus
    )
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
    return [{"item": r["path"], "reason": r["reason"]} for r in dataset.iter_rows() if r["reason"]]


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
    videos, skipped = plan_inputs(source, spec.captions)
    weights_2d, parent_2d = _pin(spec.encoder_2d.weights, store)
    weights_3d, parent_3d = _pin(spec.encoder_3d.weights, store)
    pinned = spec.model_copy(
        update={
            "encoder_2d": spec.encoder_2d.model_copy(update={"weights": weights_2d}),
            "encoder_3d": spec.encoder_3d.model_copy(update={"weights": weights_3d}),
        }
    )
    cache = fmt.PartCache(store.storage, f"cache/preprocess/{fingerprint(pinned, source)}")
    todo = [v for v in videos if not cache.has(v.video_id, v.tag)]
    log.info(
        "%d videos with captions, %d already encoded by an earlier run, %d to encode",
        len(videos),
        len(videos) - len(todo),
        len(todo),
    )
    failed = encode_videos(pinned, source, cache, context, todo) if todo else []
    failed_paths = {f["item"] for f in failed}
    usable = [v for v in videos if v.path not in failed_paths]
    parents = [p for p in (source.ref, parent_2d, parent_3d) if p is not None]
    stats = {"reused_videos": len(videos) - len(todo), "seconds": time.monotonic() - started}
    manifest = publish(pinned, context, usable, skipped + failed, cache, parents, source.uri, stats)
    cache.clear()
    return [manifest]


def _clips_of(
    video: VideoInput, features: np.ndarray, spec: PreprocessSpec, skipped: list[dict[str, str]]
) -> list[fmt.Clip]:
    clips = []
    for index, caption in enumerate(sorted(video.captions, key=lambda c: (c.start, c.end))):
        frames = fmt.clip_frames(caption.start, caption.end, spec.fps, len(features))
        if frames is None:
            skipped.append(
                {
                    "item": f"{video.video_id}@{caption.start:g}-{caption.end:g}s",
                    "reason": f"beyond the video's {len(features)} features (max_frames {spec.max_frames})",
                }
            )
            continue
        clips.append(
            fmt.Clip(video.video_id, index, caption.start, caption.end, caption.text, features[frames[0] : frames[1]])
        )
    return clips


def _write_shards(
    draft: Draft, spec: PreprocessSpec, videos: list[VideoInput], cache: fmt.PartCache, skipped: list[dict[str, str]]
) -> tuple[list[dict], list[dict]]:
    """Cut each video's features into its caption clips and write them, `shard_size` clips per shard."""
    shards: list[dict] = []
    per_video: list[dict] = []
    pending: list[fmt.Clip] = []

    def flush() -> None:
        path = f"{fmt.SHARDS}/shard-{len(shards):05d}.parquet"
        draft.add_bytes(path, fmt.parquet_bytes(fmt.clips_table(pending)))
        shards.append({"path": path, "clips": len(pending)})
        pending.clear()

    for video in sorted(videos, key=lambda v: v.video_id):
        features, duration = cache.read(video.video_id, video.tag)
        clips = _clips_of(video, features, spec, skipped)
        per_video.append(
            {"video_id": video.video_id, "duration": duration, "frames": len(features), "clips": len(clips)}
        )
        pending.extend(clips)
        if len(pending) >= spec.shard_size:
            flush()
    if pending:
        flush()
    return shards, per_video


def publish(
    spec: PreprocessSpec,
    context: JobContext,
    videos: list[VideoInput],
    skipped: list[dict[str, str]],
    cache: fmt.PartCache,
    parents: list[ArtifactRef],
    source_uri: str,
    stats: dict[str, float],
) -> Manifest:
    import pyarrow as pa

    from vlkd.models.frame_encoders import ENCODER_DIMS

    dim_2d, dim_3d = ENCODER_DIMS[spec.encoder_2d.name], ENCODER_DIMS[spec.encoder_3d.name]
    with context.store.draft("features", spec.name, context.job_id) as draft:
        shards, per_video = _write_shards(draft, spec, videos, cache, skipped)
        clips = sum(s["clips"] for s in shards)
        if clips == 0:
            reasons = sorted({s["reason"] for s in skipped})[:5]
            raise DataError(f"no usable clips in {source_uri}: every input was skipped ({'; '.join(reasons)})")
        draft.add_bytes(fmt.VIDEOS, fmt.parquet_bytes(pa.Table.from_pylist(per_video)))
        draft.add_bytes(fmt.SKIPPED, "".join(json.dumps(s) + "\n" for s in skipped).encode())
        index = {
            "format": fmt.FORMAT,
            "feature_dim": dim_2d + dim_3d,
            "dim_2d": dim_2d,
            "dim_3d": dim_3d,
            "fps": spec.fps,
            "max_frames": spec.max_frames,
            "shards": shards,
        }
        draft.add_bytes(fmt.INDEX, json.dumps(index, indent=2).encode())
        metrics = {
            "videos": len(per_video),
            "clips": clips,
            "frames": sum(v["frames"] for v in per_video),
            "skipped": len(skipped),
            "reused_videos": stats["reused_videos"],
            "seconds": round(stats["seconds"], 2),
            "videos_per_second": round(len(per_video) / max(stats["seconds"], 1e-9), 3),
        }
        attributes = {
            "encoder_2d": spec.encoder_2d.model_dump(mode="json", include={"name", "init", "weights"}),
            "encoder_3d": spec.encoder_3d.model_dump(mode="json", include={"name", "init", "weights", "depth"}),
            "random_init": "random" in (spec.encoder_2d.init, spec.encoder_3d.init),
            "pretrained": spec.encoder_2d.init == spec.encoder_3d.init == "pretrained",
            "source": source_uri,
            "feature_dim": dim_2d + dim_3d,
            "skipped": skipped[:100],  # all of them are in skipped.jsonl
        }
        manifest = draft.commit(spec=spec, parents=parents, metrics=metrics, attributes=attributes, cost=context.cost())
    log.info("%s: %d clips from %d videos, %d skipped", manifest.ref, clips, len(per_video), len(skipped))
    return manifest


if __name__ == "__main__":
    job_main("preprocess", run)
