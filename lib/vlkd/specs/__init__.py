"""Job specs: one pydantic model per stage, plus the shared parts. The single source of truth for options.

Library functions take the narrowest piece they need (`OptimSpec`, `ModelShape`), never a whole job spec.
"""

from vlkd.refs import ArtifactRef
from vlkd.specs.base import (
    DataSource,
    KubernetesSpec,
    Resources,
    StageSpec,
    StorageConfig,
    StrictModel,
    Toleration,
    quantity_bytes,
)
from vlkd.specs.data import Encoder2DSpec, Encoder3DSpec, PreprocessSpec, TextSpec, TokenizerSpec
from vlkd.specs.distill import CRDOptions, DistillSpec, KDObjective, KDOptions, NSTOptions
from vlkd.specs.evaluate import EvalModel, EvalSpec, FinetuneSpec, RetrievalSpec, TaskSpec
from vlkd.specs.loading import (
    SPEC_TYPES,
    STAGES,
    format_errors,
    load_spec,
    load_yaml,
    parse_spec,
    parse_yaml,
    spec_schema,
)
from vlkd.specs.pipeline import PipelineSpec
from vlkd.specs.shapes import PRESETS, ModelShape
from vlkd.specs.teacher import TeacherSpec
from vlkd.specs.training import OptimSpec, TrainSpec

__all__ = [
    "PRESETS",
    "SPEC_TYPES",
    "STAGES",
    "ArtifactRef",
    "CRDOptions",
    "DataSource",
    "DistillSpec",
    "Encoder2DSpec",
    "Encoder3DSpec",
    "EvalModel",
    "EvalSpec",
    "FinetuneSpec",
    "KDObjective",
    "KDOptions",
    "KubernetesSpec",
    "ModelShape",
    "NSTOptions",
    "OptimSpec",
    "PipelineSpec",
    "PreprocessSpec",
    "Resources",
    "RetrievalSpec",
    "StageSpec",
    "StorageConfig",
    "StrictModel",
    "TaskSpec",
    "TeacherSpec",
    "TextSpec",
    "TokenizerSpec",
    "Toleration",
    "TrainSpec",
    "format_errors",
    "load_spec",
    "load_yaml",
    "parse_spec",
    "parse_yaml",
    "quantity_bytes",
    "spec_schema",
]
