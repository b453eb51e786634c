"""Cheap previews of an image while it is being drawn, straight from the latents (no VAE decode).

Each latent channel contributes linearly to R, G and B: a 3xC matrix (plus a bias) turns the latents into a
rough picture at latent resolution (1/8 of the image). The factors are the ones published for each VAE and used
by the common front ends' "latent2rgb" previews (ComfyUI's comfy/latent_formats.py, AUTOMATIC1111's
"Approx cheap"). They apply to the latents a pipeline step sees (already scaled by the VAE's scaling factor).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from PIL import Image

if TYPE_CHECKING:
    from engine.pipeline import LoadedModel

Factors = tuple[tuple[tuple[float, float, float], ...], tuple[float, float, float]]

# Rows: latent channels; columns: R, G, B. Then the RGB bias.
SD1_FACTORS: Factors = (
    (
        (0.3512, 0.2297, 0.3227),
        (0.3250, 0.4974, 0.2350),
        (-0.2829, 0.1762, 0.2721),
        (-0.2120, -0.2616, -0.7177),
    ),
    (0.0, 0.0, 0.0),
)
SDXL_FACTORS: Factors = (
    (
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    (0.1084, -0.0175, -0.0011),
)
SD3_FACTORS: Factors = (
    (
        (-0.0922, -0.0175, 0.0749),
        (0.0311, 0.0633, 0.0954),
        (0.1994, 0.0927, 0.0458),
        (0.0856, 0.0339, 0.0902),
        (0.0587, 0.0272, -0.0496),
        (-0.0006, 0.1104, 0.0309),
        (0.0978, 0.0306, 0.0427),
        (-0.0042, 0.1038, 0.1358),
        (-0.0194, 0.0020, 0.0669),
        (-0.0488, 0.0130, -0.0268),
        (0.0922, 0.0988, 0.0951),
        (-0.0278, 0.0524, -0.0542),
        (0.0332, 0.0456, 0.0895),
        (-0.0069, -0.0030, -0.0810),
        (-0.0596, -0.0465, -0.0293),
        (-0.1448, -0.1463, -0.1189),
    ),
    (0.2394, 0.2135, 0.1925),
)

SDXL_VAE_SCALING = 0.13025  # the SDXL VAE's scaling_factor; SD 1.x/2.x use 0.18215
SD3_VAE_SCALING = 1.5305  # the SD3 VAE's; Flux's 16-channel VAE uses 0.3611 (and packs its latents)


def latent_factors(pipe: Any) -> Factors | None:
    """The latent->RGB factors for this pipeline's VAE, or None for a layout without published factors.

    Told apart by the VAE config rather than the pipeline class, since several pipelines share a VAE:
    4 channels with SDXL's scaling factor -> SDXL; other 4-channel VAEs -> SD 1.x/2.x (PixArt uses that VAE
    too); 16 channels with SD3's scaling factor -> SD3. Flux (16 channels, latents packed into 2x2 patches
    during sampling), Sana's 32-channel DC-AE and everything else -> None.
    """
    vae = getattr(pipe, "vae", None)
    config = getattr(vae, "config", None)
    if config is None:
        return None
    channels = getattr(config, "latent_channels", None)
    scaling = float(getattr(config, "scaling_factor", 0.0) or 0.0)
    if channels == 4:
        return SDXL_FACTORS if abs(scaling - SDXL_VAE_SCALING) < 1e-4 else SD1_FACTORS
    if channels == 16 and abs(scaling - SD3_VAE_SCALING) < 1e-4:
        return SD3_FACTORS
    return None


def preview_png(model: LoadedModel, latents: Any, index: int, *, max_side: int = 96) -> bytes | None:
    """A small PNG of image `index` of a batch of latents (as `generate_batch`'s on_step gets them).

    Latent resolution (1/8 of the image for most VAEs), shrunk so neither side exceeds `max_side` and never
    enlarged. None when the latents have a layout this module has no factors for (see `latent_factors`).
    """
    factors = latent_factors(model.pipe)
    if factors is None or not isinstance(latents, torch.Tensor) or latents.ndim != 4:
        return None
    weights, bias = factors
    if latents.shape[1] != len(weights):
        return None
    if not 0 <= index < latents.shape[0]:
        raise IndexError(f"image {index} is not in a batch of {latents.shape[0]}")
    with torch.no_grad():
        sample = latents[index].detach().float()
        matrix = torch.tensor(weights, dtype=torch.float32, device=sample.device)
        offset = torch.tensor(bias, dtype=torch.float32, device=sample.device)
        rgb = torch.einsum("chw,cr->rhw", sample, matrix) + offset[:, None, None]
        height, width = rgb.shape[1:]
        scale = max_side / max(height, width)
        if scale < 1:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            rgb = F.interpolate(rgb[None], size=size, mode="area")[0]
        pixels = ((rgb + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().cpu()
    image = Image.fromarray(pixels.numpy(), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
