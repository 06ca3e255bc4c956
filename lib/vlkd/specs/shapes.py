"""BERT shape presets: the paper's two (footnote 3, Sec. 3.2) and `tiny` for CPU tests."""

from __future__ import annotations

from typing import Any

from pydantic import Field, GetJsonSchemaHandler, field_validator, model_validator

from vlkd.specs.base import StrictModel

PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"num_layers": 2, "hidden_size": 64, "num_heads": 2, "intermediate_size": 256},
    "bert-6l-512h": {"num_layers": 6, "hidden_size": 512, "num_heads": 8, "intermediate_size": 2048},
    "bert-12l-768h": {"num_layers": 12, "hidden_size": 768, "num_heads": 12, "intermediate_size": 3072},
}
DEFAULT_PRESET = "bert-12l-768h"  # Table 1's student and teacher


class ModelShape(StrictModel):
    """A transformer's shape: a preset, with any field overridden (`{preset: bert-6l-512h, num_layers: 4}`).

    After validation every field holds its concrete value, so the spec stored with an artifact says exactly
    what was built, whatever the preset table says later."""

    preset: str = Field(DEFAULT_PRESET, description=f"one of {', '.join(PRESETS)}")
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    max_position_embeddings: int = Field(512, gt=0)
    hidden_dropout: float = Field(0.1, ge=0, lt=1)
    attention_dropout: float = Field(0.1, ge=0, lt=1)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        # Every field has a value from the preset, and a bare preset name is a shape too (`model: tiny`).
        shape = handler.resolve_ref_schema(handler(schema))
        shape.pop("required", None)
        return {"anyOf": [{"type": "string", "enum": list(PRESETS)}, shape]}

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"preset": data}
        if isinstance(data, dict):
            # An unknown preset is reported by the `preset` field's validator; fill from the default meanwhile
            # so the user sees one error, not one per shape field.
            base = PRESETS.get(data.get("preset", DEFAULT_PRESET), PRESETS[DEFAULT_PRESET])
            data = {**base, **data}
        return data

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str) -> str:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
        return preset

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelShape:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})")
        return self
