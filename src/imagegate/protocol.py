"""OpenAI Images API wire models, field for field, in the order of the official spec
(shared/reference/openai-images-openapi.yaml). Extensions for open models are marked.

Validation here is about shape and ranges only; rules that depend on the model (sizes,
quality names, format/background combinations) live in normalize.py."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Background = Literal["transparent", "opaque", "auto"]
Quality = Literal["standard", "hd", "low", "medium", "high", "auto"]
OutputFormat = Literal["png", "jpeg", "webp", "avif", "gif"]
ResponseFormat = Literal["url", "b64_json"]
InputFidelity = Literal["high", "low"]


class _Extensions(BaseModel):
    """Extensions users of open models expect (not in OpenAI's API)."""

    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = Field(None, description="Extension: reproducible seed.")
    negative_prompt: Annotated[str, Field(max_length=32000)] | None = Field(None, description="Extension.")
    num_inference_steps: Annotated[int, Field(ge=1, le=200)] | None = Field(None, description="Extension: overrides the quality preset.")
    guidance_scale: Annotated[float, Field(ge=0.0, le=50.0)] | None = Field(None, description="Extension: overrides the quality preset.")
    aspect_ratio: str | None = Field(None, description='Extension: "16:9"; `size` wins over it.')
    resolution: Literal["0.5K", "1K", "2K", "4K"] | None = Field(None, description="Extension; `size` wins over it.")
    lora: str | None = Field(None, description="Extension: a LoRA adapter declared for the model in the models file.")
    lora_scale: Annotated[float, Field(ge=0.0, le=4.0)] | None = Field(None, description="Extension: LoRA weight (1.0).")


class _Common(_Extensions):
    model_config = ConfigDict(extra="forbid")

    n: Annotated[int, Field(ge=1, le=10)] | None = 1
    quality: Quality | None = "auto"
    response_format: ResponseFormat | None = None
    output_format: OutputFormat | None = "png"
    output_compression: Annotated[int, Field(ge=0, le=100)] | None = None
    stream: bool | None = False
    partial_images: Annotated[int, Field(ge=0, le=3)] | None = None
    size: str | None = "auto"
    background: Background | None = "auto"
    user: str | None = None
    safety_identifier: str | None = None


class CreateImageRequest(_Common):
    prompt: str
    model: str | None = None
    moderation: Literal["low", "auto"] | None = "auto"
    style: Literal["vivid", "natural"] | None = None


class ImageRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_url: Annotated[str, Field(max_length=20_971_520)] | None = None
    file_id: str | None = None


class CreateImageEditJSONRequest(_Common):
    """The JSON form of /images/edits: images by reference (data URLs)."""

    images: Annotated[list[ImageRef], Field(min_length=1)]
    prompt: str
    mask: ImageRef | None = None
    model: str | None = None
    input_fidelity: InputFidelity | None = None
    moderation: Literal["low", "auto"] | None = "auto"


class CreateImageEditForm(_Common):
    """The multipart form of /images/edits once its files have been read."""

    prompt: str
    model: str | None = None
    input_fidelity: InputFidelity | None = None
    moderation: Literal["low", "auto"] | None = "auto"


class CreateImageVariationForm(_Extensions):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    n: Annotated[int, Field(ge=1, le=10)] | None = 1
    response_format: ResponseFormat | None = None
    size: str | None = None
    user: str | None = None
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


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
