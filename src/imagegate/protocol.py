"""OpenAI Images API wire models, field for field, in the order of the official spec
(shared/reference/openai-images-openapi.yaml). Extensions for open models are marked.

Validation here is about shape and ranges only; rules that depend on the model (sizes,
quality names, format/background combinations) live in normalize.py."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

Background = Literal["transparent", "opaque", "auto"]
Quality = Literal["standard", "hd", "low", "medium", "high", "auto"]
OutputFormat = Literal["png", "jpeg", "webp", "avif", "gif"]
ResponseFormat = Literal["url", "b64_json"]
InputFidelity = Literal["high", "low"]


def _encodable(value: str) -> str:
    """Text must be valid Unicode: a lone UTF-16 surrogate ("\\ud800" in JSON) parses in
    Python but cannot be encoded, and failed inside the tokenizer for every request batched
    with it. Refused here, before anything is queued or written to the ledger."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError(
            "invalid_unicode", "contains an unpaired UTF-16 surrogate at position {pos}; send valid Unicode text",
            {"pos": exc.start}) from None
    return value


# Every free-text field of the wire models.
Text = Annotated[str, AfterValidator(_encodable)]
# A model name: a non-empty single line (an empty string is not "no model").
ModelName = Annotated[
    str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$"), AfterValidator(_encodable)
]


class _Extensions(BaseModel):
    """Extensions users of open models expect (not in OpenAI's API)."""

    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = Field(None, description="Extension: reproducible seed.")
    negative_prompt: Annotated[Text, Field(max_length=32000)] | None = Field(None, description="Extension.")
    num_inference_steps: Annotated[int, Field(ge=1, le=200)] | None = Field(
        None, description="Extension: overrides the quality preset.")
    guidance_scale: Annotated[float, Field(ge=0.0, le=50.0)] | None = Field(
        None, description="Extension: overrides the quality preset.")
    aspect_ratio: Annotated[Text, Field(max_length=32)] | None = Field(
        None, description='Extension: "16:9"; `size` wins over it.')
    resolution: Literal["0.5K", "1K", "2K", "4K"] | None = Field(None, description="Extension; `size` wins over it.")
    lora: Annotated[Text, Field(max_length=256)] | None = Field(
        None, description="Extension: a LoRA adapter declared for the model in the models file.")
    lora_scale: Annotated[float, Field(ge=0.0, le=4.0)] | None = Field(
        None, description="Extension: LoRA weight (1.0).")


class _Common(_Extensions):
    model_config = ConfigDict(extra="forbid")

    n: Annotated[int, Field(ge=1, le=10)] | None = 1
    quality: Quality | None = "auto"
    response_format: ResponseFormat | None = None
    output_format: OutputFormat | None = "png"
    output_compression: Annotated[int, Field(ge=0, le=100)] | None = None
    stream: bool | None = False
    partial_images: Annotated[int, Field(ge=0, le=3)] | None = None
    size: Annotated[Text, Field(min_length=1, max_length=32)] | None = "auto"
    background: Background | None = "auto"
    user: Text | None = None
    safety_identifier: Text | None = None


class CreateImageRequest(_Common):
    prompt: Text
    model: ModelName | None = None
    moderation: Literal["low", "auto"] | None = "auto"
    style: Literal["vivid", "natural"] | None = None


class ImageRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_url: Annotated[str, Field(max_length=20_971_520)] | None = None
    file_id: str | None = None


class CreateImageEditJSONRequest(_Common):
    """The JSON form of /images/edits: images by reference (data URLs)."""

    images: Annotated[list[ImageRef], Field(min_length=1)]
    prompt: Text
    mask: ImageRef | None = None
    model: ModelName | None = None
    input_fidelity: InputFidelity | None = None
    moderation: Literal["low", "auto"] | None = "auto"


class CreateImageEditForm(_Common):
    """The multipart form of /images/edits once its files have been read."""

    prompt: Text
    model: ModelName | None = None
    input_fidelity: InputFidelity | None = None
    moderation: Literal["low", "auto"] | None = "auto"


class CreateImageVariationForm(_Extensions):
    model_config = ConfigDict(extra="forbid")

    model: ModelName | None = None
    n: Annotated[int, Field(ge=1, le=10)] | None = 1
    response_format: ResponseFormat | None = None
    size: Annotated[Text, Field(min_length=1, max_length=32)] | None = None
    user: Text | None = None
    # Not in OpenAI's variation API but accepted for symmetry with generations.
    output_format: OutputFormat | None = "png"
    output_compression: Annotated[int, Field(ge=0, le=100)] | None = None


class InputTokensDetails(BaseModel):
    text_tokens: int
    image_tokens: int


class OutputTokensDetails(BaseModel):
    image_tokens: int
    text_tokens: int


class ImagesUsage(BaseModel):
    total_tokens: int
    input_tokens: int
    output_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens_details: OutputTokensDetails | None = None


class Image(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[Image]
    background: Literal["transparent", "opaque"] | None = None
    output_format: OutputFormat | None = None
    size: str | None = None
    quality: Literal["low", "medium", "high"] | None = None
    usage: ImagesUsage | None = None


class _StreamEvent(BaseModel):
    b64_json: str
    created_at: int
    size: str
    quality: str
    background: str
    output_format: str


class PartialImageEvent(_StreamEvent):
    type: Literal["image_generation.partial_image", "image_edit.partial_image"]
    partial_image_index: int


class CompletedEvent(_StreamEvent):
    type: Literal["image_generation.completed", "image_edit.completed"]
    usage: ImagesUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    alias_of: str | None = None
    # Extra to OpenAI's card (the SDK ignores it): what an image costs here (pricing.py).
    pricing: dict[str, Any] | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- moderations (POST /v1/moderations) ------------------------------------------------------
class ModerationImageURL(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str


class ModerationImageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["image_url"]
    image_url: ModerationImageURL


class ModerationTextInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: Annotated[str, AfterValidator(_encodable)]


class ModerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: (Annotated[str, AfterValidator(_encodable)] | list[Annotated[str, AfterValidator(_encodable)]]
            | list[Annotated[ModerationTextInput | ModerationImageInput, Field(discriminator="type")]])
    model: str | None = None


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]
