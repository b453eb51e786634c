"""`DemoPipeline`: a small pixel-space text-to-image pipeline (no VAE) that saves and loads like any diffusers one.

The UNet denoises 32x32 RGB images rearranged losslessly to 16x16x12 (pixel-unshuffle: convolutions are ~4x
cheaper than on 32x32x3); the result is shown upscaled to the requested size (64x64 by default). A pooled text
embedding enters every residual block through the UNet's class embedding, on top of cross-attention.

An output that is not square is drawn in its proportions at about the trained area (the UNet is convolutional)
rather than stretched. Given source images and a strength, it draws from them (variations and upscales): each
source, brought down to the drawing size, is noised to the point of the schedule that `strength` names, and
only the rest of the schedule runs, as in diffusers' image-to-image pipelines.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModel, PreTrainedTokenizerFast

from engine.demo.text import encode, tokenize

PIXELS = 32  # the resolution the model draws at
UNSHUFFLE = 2
DISPLAY = 64  # the default output size: PIXELS shown upscaled


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, 32, 32) in [-1, 1] -> (B, 12, 16, 16)."""
    return F.pixel_unshuffle(images, UNSHUFFLE)


def to_pixels(sample: torch.Tensor) -> torch.Tensor:
    return F.pixel_shuffle(sample, UNSHUFFLE)


def build_unet(
    text_width: int = 128,
    channels: tuple[int, ...] = (64, 96, 128),
    layers_per_block: int = 1,
    heads: int = 4,
) -> UNet2DConditionModel:
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(channels) - 1)
    up = ("CrossAttnUpBlock2D",) * (len(channels) - 1) + ("UpBlock2D",)
    unet: UNet2DConditionModel = cast(Any, UNet2DConditionModel)(
        sample_size=PIXELS // UNSHUFFLE,
        in_channels=3 * UNSHUFFLE**2,
        out_channels=3 * UNSHUFFLE**2,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=channels,
        layers_per_block=layers_per_block,
        cross_attention_dim=text_width,
        attention_head_dim=heads,  # diffusers: the number of heads, not their width
        norm_num_groups=min(32, channels[0]),
        class_embed_type="projection",
        projection_class_embeddings_input_dim=text_width,
    )
    return unet


def build_scheduler() -> DDIMScheduler:
    scheduler: DDIMScheduler = cast(Any, DDIMScheduler)(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        clip_sample=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return scheduler


# Seen through diffusers' lazy imports, mypy would take the dummy placeholder class for the real one.
_DiffusionPipeline: Any = diffusers.DiffusionPipeline
_LoraLoader: Any = importlib.import_module("diffusers.loaders").StableDiffusionLoraLoaderMixin


class DemoPipeline(_DiffusionPipeline, _LoraLoader):  # type: ignore[misc]  # diffusers is untyped
    """LoRAs load as for Stable Diffusion (`load_lora_weights`, `set_adapters`, ...): the mixin reads `unet` and
    `text_encoder`, which this pipeline has with the same classes."""

    model_cpu_offload_seq = "text_encoder->unet"
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents"]
    # Native size for the engine (denoiser sample size x this factor): 16 x 4 = 64, the upscaled display size.
    vae_scale_factor = DISPLAY // (PIXELS // UNSHUFFLE)

    def __init__(
        self,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        tokenizer: PreTrainedTokenizerFast,
        scheduler: DDIMScheduler,
    ) -> None:
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        self._interrupt = False
        self._num_timesteps = 0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    def model_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) in model space for an output of `width` x `height`: the trained square for a square
        output; otherwise the trained area in the output's proportions (the UNet is convolutional), so that an
        aspect ratio is drawn, not stretched. Each side a multiple of what the UNet's downsampling needs."""
        size = int(self.unet.config.sample_size)
        if width == height:
            return size, size
        multiple = 2 ** (len(self.unet.config.block_out_channels) - 1)
        ratio = width / height
        model_width = max(multiple, round(size * ratio**0.5 / multiple) * multiple)
        model_height = max(multiple, round(size / ratio**0.5 / multiple) * multiple)
        return model_height, model_width

    def _embed(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = tokenize(self.tokenizer, prompts)
        states, pooled = encode(self.text_encoder, ids)
        return states.to(self.unet.dtype), pooled.to(self.unet.dtype)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float = 2.0,
        width: int | None = None,
        height: int | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        image: Image.Image | Sequence[Image.Image] | None = None,
        strength: float = 0.6,
    ) -> Any:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [text for text in prompts for _ in range(num_images_per_prompt)]
        count = len(prompts)
        if negative_prompt is None:
            negatives = [""] * count
        elif isinstance(negative_prompt, str):
            negatives = [negative_prompt] * count
        else:
            negatives = [text for text in negative_prompt for _ in range(num_images_per_prompt)]
        if len(negatives) != count:
            raise ValueError(f"negative_prompt has {len(negatives)} entries for {count} images; give one per prompt.")
        if isinstance(generator, list) and len(generator) != count:
            raise ValueError(f"generator has {len(generator)} entries for {count} images; give one per image.")
        width, height = width or DISPLAY, height or DISPLAY
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive, not {width}x{height}.")

        device = self._execution_device
        dtype = self.unet.dtype
        shape = (self.unet.config.in_channels, *self.model_size(width or DISPLAY, height or DISPLAY))
        sources = None
        if image is not None:
            sources = [image] if isinstance(image, Image.Image) else list(image)
            if num_images_per_prompt > 1 and len(sources) * num_images_per_prompt == count:
                sources = [source for source in sources for _ in range(num_images_per_prompt)]
            if len(sources) != count:
                raise ValueError(f"image has {len(sources)} entries for {count} images; give one per image.")
            if not 0.0 < strength <= 1.0:
                raise ValueError(f"strength must be above 0 and at most 1, not {strength}.")
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        if sources is not None:
            # Skip the first (1 - strength) of the schedule, as diffusers' image-to-image pipelines do.
            kept = min(int(num_inference_steps * strength), num_inference_steps)
            timesteps = timesteps[num_inference_steps - kept :]
        if latents is None:
            generators = generator if isinstance(generator, list) else [generator] * count
            noise = [torch.randn(shape, generator=g, device=g.device if g else device, dtype=dtype) for g in generators]
            latents = torch.stack(noise).to(device)
            if sources is not None and len(timesteps):
                drawn = (shape[1] * UNSHUFFLE, shape[2] * UNSHUFFLE)
                clean = to_model_space(from_images(sources, drawn).to(device=device, dtype=dtype))
                latents = self.scheduler.add_noise(clean, latents, timesteps[:1].repeat(count))
        guided = guidance_scale > 1.0
        states, pooled = self._embed(prompts + negatives if guided else prompts)

        self._num_timesteps = len(timesteps)
        self._interrupt = False
        for step, timestep in enumerate(timesteps):
            if self._interrupt:
                continue
            model_input = torch.cat([latents, latents]) if guided else latents
            prediction = self.unet(model_input, timestep, encoder_hidden_states=states, class_labels=pooled).sample
            if guided:
                conditional, unconditional = prediction.chunk(2)
                prediction = unconditional + guidance_scale * (conditional - unconditional)
            latents = self.scheduler.step(prediction, timestep, latents).prev_sample
            if callback_on_step_end is not None:
                returned = callback_on_step_end(self, step, timestep, {"latents": latents})
                latents = returned.get("latents", latents)

        pixels = to_pixels(latents.float()).clamp(-1, 1)
        if (height, width) != pixels.shape[-2:]:
            pixels = F.interpolate(pixels, size=(height, width), mode="bicubic", align_corners=False).clamp(-1, 1)
        images: Any = (pixels + 1) / 2
        if output_type != "pt":
            array = images.permute(0, 2, 3, 1).cpu().numpy()
            images = array if output_type == "np" else [to_image(item) for item in array]
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return cast(Any, diffusers.ImagePipelineOutput)(images=images)


def from_images(images: Sequence[Image.Image], size: tuple[int, int] = (PIXELS, PIXELS)) -> torch.Tensor:
    """Pictures of any size as a (B, 3, height, width) batch in [-1, 1] at `size` (height, width), brought down
    with an area filter."""
    arrays = [
        np.asarray(picture.convert("RGB").resize((size[1], size[0]), Image.Resampling.BOX), dtype=np.float32)
        for picture in images
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


def to_image(array: np.ndarray[Any, Any]) -> Image.Image:
    return Image.fromarray(np.round(array * 255).clip(0, 255).astype(np.uint8))


def build_pipeline(
    text_width: int = 128, channels: tuple[int, ...] = (64, 96, 128), layers_per_block: int = 1
) -> DemoPipeline:
    """A fresh, untrained demo pipeline (random weights)."""
    from engine.demo.text import build_text_encoder, build_tokenizer

    tokenizer = build_tokenizer()
    return DemoPipeline(
        unet=build_unet(text_width, channels, layers_per_block),
        text_encoder=build_text_encoder(tokenizer, hidden=text_width),
        tokenizer=tokenizer,
        scheduler=build_scheduler(),
    )
