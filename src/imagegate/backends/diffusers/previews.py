"""Streaming previews: which steps send one, and turning a batch's current latents into
pictures (a tiny autoencoder when configured, else the model's own VAE)."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from ...normalize import ImageSpec


def partial_steps(total: int, partials: int) -> list[int]:
    """Step indices after which previews are sent: evenly spaced, never the last step
    (the final image is the completed event)."""
    if partials <= 0 or total <= 1:
        return []
    return sorted({max(0, min(total - 2, round(total * (i + 1) / (partials + 1)) - 1)) for i in range(partials)})


def decode_preview(pipe: Any, latents: torch.Tensor, spec: ImageSpec, latents_kind: str,
                   preview_vae: Any = None) -> list[Image.Image]:
    """The current latents as pictures, unpacking FLUX-style packed latents first."""
    if latents_kind == "packed":
        latents = pipe._unpack_latents(latents, spec.gen_height, spec.gen_width, pipe.vae_scale_factor)
    elif latents_kind == "flux2":
        latents = _unpack_flux2(pipe, latents, spec.gen_height, spec.gen_width)
    vae = pipe.vae
    if preview_vae is not None:
        decoded = preview_vae.decode(latents.to(preview_vae.dtype), return_dict=False)[0]
    else:
        cfg = vae.config
        x = latents.to(vae.dtype)
        if latents_kind == "flux2":
            pass  # _unpack_flux2 already undid FLUX.2's latent batch-norm: the VAE's own input
        elif getattr(cfg, "latents_mean", None) is not None and getattr(cfg, "latents_std", None) is not None:
            shape = [1, -1] + [1] * (x.ndim - 2)
            mean = torch.tensor(cfg.latents_mean, device=x.device, dtype=x.dtype).view(*shape)
            std = torch.tensor(cfg.latents_std, device=x.device, dtype=x.dtype).view(*shape)
            x = x * std + mean
        else:
            x = x / getattr(cfg, "scaling_factor", 1.0) + (getattr(cfg, "shift_factor", None) or 0.0)
        decoded = vae.decode(x, return_dict=False)[0]
    if decoded.ndim == 5:
        decoded = decoded[:, :, 0]
    decoded = (decoded.float() / 2 + 0.5).clamp(0, 1)
    arr = (decoded.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype("uint8")
    return [Image.fromarray(a) for a in arr]


def _unpack_flux2(pipe: Any, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """FLUX.2's packed (B, h·w, C·4), batch-normalised latents → its VAE's input, as the end
    of Flux2Pipeline.__call__ does before vae.decode: scatter the tokens back to
    (B, C·4, h, w) by their position ids, undo the VAE's latent batch-norm, unfold the 2x2
    patches into (B, C, 2h, 2w)."""
    for name in ("_prepare_latent_ids", "_unpack_latents_with_ids", "_unpatchify_latents"):
        if not hasattr(pipe, name):
            raise NotImplementedError(f"this diffusers version's {type(pipe).__name__} has no {name}")
    # The pipeline's own arithmetic (prepare_latents): the patched grid of the bucket.
    h = int(height) // (pipe.vae_scale_factor * 2)
    w = int(width) // (pipe.vae_scale_factor * 2)
    ids = pipe._prepare_latent_ids(latents.new_empty(latents.shape[0], 1, h, w)).to(latents.device)
    x = pipe._unpack_latents_with_ids(latents, ids)
    bn = pipe.vae.bn
    mean = bn.running_mean.view(1, -1, 1, 1).to(x.device, x.dtype)
    std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + pipe.vae.config.batch_norm_eps).to(x.device, x.dtype)
    image_latents: torch.Tensor = pipe._unpatchify_latents(x * std + mean)
    return image_latents
