"""What each diffusers model family can do, and how to drive it.

One row per family: the diffusers pipeline class for each mode it supports, its native
resolution and size multiple, default quality presets, and the few ways its pipelines
differ (how guidance and negative prompts are passed, how its latents are laid out for
previews). The family is detected from the checkpoint's `model_index.json` class name
(or a single file's keys) and can be overridden with `family = "..."` in the models file.

Modes: txt2img, img2img, inpaint (mask), edit (native instruction editing from input
images). A mode missing from a row is a 400 naming the parameter that asked for it."""

from __future__ import annotations

from dataclasses import dataclass, field

Preset = dict[str, tuple[int, float]]


@dataclass(frozen=True)
class Family:
    name: str
    modes: dict[str, str]  # mode -> diffusers pipeline class
    native_size: int = 1024
    size_multiple: int = 16
    quality: Preset = field(default_factory=lambda: {"low": (12, 5.0), "medium": (25, 5.0), "high": (40, 5.0)})
    multi_image: bool = False  # the edit pipeline takes several reference images natively
    # How "classifier-free guidance" is passed: "guidance_scale", or "true_cfg_scale" for
    # pipelines whose guidance_scale is a distilled embedding (Qwen-Image).
    cfg_param: str = "guidance_scale"
    negative_prompt: bool = True
    # Latent layout, for decoding previews: "spatial" (B,C,h,w) or "packed" (B, seq, C·4) as in FLUX.
    latents: str = "spatial"
    # T5 prompt length where the family's reference differs from the pipeline default
    # (FLUX.1-schnell was distilled with 256 tokens; FluxPipeline defaults to 512).
    max_sequence_length: int | None = None
    description: str = ""


_SD_Q: Preset = {"low": (12, 7.0), "medium": (25, 7.5), "high": (40, 7.5)}
_TURBO_Q: Preset = {"low": (1, 0.0), "medium": (2, 0.0), "high": (4, 0.0)}

FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("sd", {"txt2img": "StableDiffusionPipeline", "img2img": "StableDiffusionImg2ImgPipeline",
                  "inpaint": "StableDiffusionInpaintPipeline"}, native_size=512, size_multiple=64, quality=_SD_Q,
           description="Stable Diffusion 1.x/2.x"),
    Family("sd-turbo", {"txt2img": "StableDiffusionPipeline", "img2img": "StableDiffusionImg2ImgPipeline",
                        "inpaint": "StableDiffusionInpaintPipeline"}, native_size=512, size_multiple=64,
           quality=_TURBO_Q, description="SD-Turbo (1-4 steps, no CFG)"),
    Family("sd-inpaint", {"inpaint": "StableDiffusionInpaintPipeline"}, native_size=512, size_multiple=64,
           quality=_SD_Q, description="SD 1.x/2.x inpainting checkpoints (9-channel UNet: masks only)"),
    Family("sdxl", {"txt2img": "StableDiffusionXLPipeline", "img2img": "StableDiffusionXLImg2ImgPipeline",
                    "inpaint": "StableDiffusionXLInpaintPipeline"}, native_size=1024, size_multiple=64,
           quality={"low": (15, 5.0), "medium": (30, 6.0), "high": (40, 7.0)}, description="SDXL"),
    Family("sdxl-turbo", {"txt2img": "StableDiffusionXLPipeline", "img2img": "StableDiffusionXLImg2ImgPipeline",
                          "inpaint": "StableDiffusionXLInpaintPipeline"}, native_size=512, size_multiple=64,
           quality=_TURBO_Q, description="SDXL-Turbo / Lightning"),
    Family("sdxl-inpaint", {"inpaint": "StableDiffusionXLInpaintPipeline"}, native_size=1024, size_multiple=64,
           quality={"low": (15, 5.0), "medium": (30, 6.0), "high": (40, 7.0)},
           description="SDXL inpainting checkpoints (9-channel UNet: masks only)"),
    Family("sd3", {"txt2img": "StableDiffusion3Pipeline", "img2img": "StableDiffusion3Img2ImgPipeline",
                   "inpaint": "StableDiffusion3InpaintPipeline"},
           quality={"low": (14, 4.5), "medium": (28, 5.0), "high": (40, 5.5)}, description="Stable Diffusion 3 / 3.5"),
    Family("flux", {"txt2img": "FluxPipeline", "img2img": "FluxImg2ImgPipeline", "inpaint": "FluxInpaintPipeline"},
           quality={"low": (14, 3.5), "medium": (28, 3.5), "high": (40, 3.5)}, negative_prompt=False,
           latents="packed", description="FLUX.1 dev"),
    Family("flux-schnell", {"txt2img": "FluxPipeline", "img2img": "FluxImg2ImgPipeline",
                            "inpaint": "FluxInpaintPipeline"},
           quality={"low": (1, 0.0), "medium": (4, 0.0), "high": (8, 0.0)}, negative_prompt=False, latents="packed",
           max_sequence_length=256, description="FLUX.1 schnell"),
    Family("flux-fill", {"inpaint": "FluxFillPipeline"}, quality={"low": (14, 30.0), "medium": (28, 30.0),
                                                                 "high": (40, 30.0)},
           negative_prompt=False, latents="packed", description="FLUX.1 Fill (masks only)"),
    Family("flux-kontext", {"txt2img": "FluxKontextPipeline", "edit": "FluxKontextPipeline",
                            "inpaint": "FluxKontextInpaintPipeline"},
           quality={"low": (14, 2.5), "medium": (28, 2.5), "high": (40, 2.5)}, negative_prompt=False,
           latents="packed", description="FLUX.1 Kontext (instruction editing)"),
    Family("flux2", {"txt2img": "Flux2Pipeline", "edit": "Flux2Pipeline"}, multi_image=True,
           quality={"low": (14, 4.0), "medium": (28, 4.0), "high": (50, 4.0)}, negative_prompt=False,
           latents="flux2", description="FLUX.2 (multi-reference editing)"),
    Family("qwen-image", {"txt2img": "QwenImagePipeline", "img2img": "QwenImageImg2ImgPipeline",
                          "inpaint": "QwenImageInpaintPipeline"}, cfg_param="true_cfg_scale",
           quality={"low": (20, 4.0), "medium": (30, 4.0), "high": (50, 4.0)}, latents="packed",
           description="Qwen-Image"),
    Family("qwen-image-edit", {"edit": "QwenImageEditPipeline"}, cfg_param="true_cfg_scale",
           quality={"low": (20, 4.0), "medium": (30, 4.0), "high": (50, 4.0)}, latents="packed",
           description="Qwen-Image-Edit"),
    Family("qwen-image-edit-plus", {"edit": "QwenImageEditPlusPipeline"}, cfg_param="true_cfg_scale", multi_image=True,
           quality={"low": (20, 4.0), "medium": (30, 4.0), "high": (50, 4.0)}, latents="packed",
           description="Qwen-Image-Edit-Plus (multi-image)"),
    Family("pixart-sigma", {"txt2img": "PixArtSigmaPipeline"},
           quality={"low": (10, 4.5), "medium": (20, 4.5), "high": (30, 4.5)}, description="PixArt-Σ"),
    Family("sana", {"txt2img": "SanaPipeline"}, size_multiple=32,
           quality={"low": (10, 4.5), "medium": (20, 4.5), "high": (30, 4.5)}, description="Sana"),
]}

# model_index.json `_class_name` → family. Turbo/schnell variants share their base's
# classes: name them with `family = ...` in the models file to get their presets.
CLASS_TO_FAMILY = {
    "StableDiffusionPipeline": "sd", "StableDiffusionImg2ImgPipeline": "sd", "StableDiffusionInpaintPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl", "StableDiffusionXLImg2ImgPipeline": "sdxl",
    "StableDiffusionXLInpaintPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3", "StableDiffusion3Img2ImgPipeline": "sd3",
    "StableDiffusion3InpaintPipeline": "sd3",
    "FluxPipeline": "flux", "FluxImg2ImgPipeline": "flux", "FluxInpaintPipeline": "flux",
    "FluxFillPipeline": "flux-fill", "FluxKontextPipeline": "flux-kontext",
    "FluxKontextInpaintPipeline": "flux-kontext",
    "Flux2Pipeline": "flux2",
    "QwenImagePipeline": "qwen-image", "QwenImageImg2ImgPipeline": "qwen-image",
    "QwenImageInpaintPipeline": "qwen-image", "QwenImageEditPipeline": "qwen-image-edit",
    "QwenImageEditPlusPipeline": "qwen-image-edit-plus",
    "PixArtSigmaPipeline": "pixart-sigma", "SanaPipeline": "sana",
}

# diffusers' single-file model types (single_file_utils.infer_diffusers_model_type) → family.
SINGLE_FILE_TYPES = {
    "v1": "sd", "v2": "sd", "inpainting": "sd-inpaint", "inpainting_v2": "sd-inpaint", "xl_base": "sdxl",
    "xl_inpaint": "sdxl-inpaint",
    "playground-v2-5": "sdxl", "sd3": "sd3", "sd35_medium": "sd3", "sd35_large": "sd3",
    "flux-dev": "flux", "flux-schnell": "flux-schnell", "flux-fill": "flux-fill",
}


# A 9-channel UNet (latents + mask + masked image) can only inpaint, whatever the class says.
INPAINT_ONLY = {"sd": "sd-inpaint", "sdxl": "sdxl-inpaint"}


def family_for_class(class_name: str, unet_in_channels: int | None = None) -> str | None:
    family = CLASS_TO_FAMILY.get(class_name)
    if family in INPAINT_ONLY and unet_in_channels == 9:
        return INPAINT_ONLY[family]
    return family
