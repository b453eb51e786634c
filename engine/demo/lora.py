"""A small LoRA fine-tune of the demo UNet on an image folder (the quality bench teaches it "striped" this way).

The base weights stay frozen; the adapter (peft) on the UNet's attention, residual convolutions and time/text
embedding projections is trained with the same loss as full training, together with the input embeddings of
`new_words` (words the base never saw, whose embeddings are still at their random start), as kohya's "pivotal
tuning" does. Mixing in images without the new word keeps the concept tied to it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from peft import LoraConfig

from engine.demo.pipeline import PIXELS, DemoPipeline
from engine.demo.text import encode, tokenize
from engine.demo.train_full import diffusion_loss, load_images

ADAPTER = "concept"
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "time_emb_proj"]


def train_lora(
    pipe: DemoPipeline,
    data: Path,
    *,
    steps: int = 600,
    batch_size: int = 8,
    learning_rate: float = 3e-3,
    rank: int = 16,
    seed: int = 0,
    object_weight: float = 3.0,
    new_words: Sequence[str] = (),
    on_log: Callable[[str], None] | None = None,
) -> float:
    """Add a LoRA adapter named `ADAPTER` to `pipe.unet` and train it (and the embeddings of `new_words`) on
    `data` in place. Returns the last loss."""
    images, masks, captions = load_images(data, PIXELS)
    unet, text_encoder = pipe.unet, pipe.text_encoder
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=TARGETS), ADAPTER)
    trainable = [p for p in unet.parameters() if p.requires_grad]
    embedding = text_encoder.get_input_embeddings().weight
    rows = [pipe.tokenizer.convert_tokens_to_ids(word) for word in new_words]
    if pipe.tokenizer.unk_token_id in rows:
        raise ValueError(f"every new word must be in the tokenizer's vocabulary: {', '.join(new_words)}")
    if rows:
        keep = torch.zeros_like(embedding[:, :1])
        keep[rows] = 1.0
        embedding.requires_grad_(True)
        embedding.register_hook(lambda grad: grad * keep)  # only the new words' rows move
        trainable.append(embedding)
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)
    ids = tokenize(pipe.tokenizer, captions)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    unet.train()
    loss_value = float("nan")
    for step in range(steps):
        batch = torch.tensor([rng.randrange(len(captions)) for _ in range(batch_size)])
        states, pooled = encode(text_encoder, ids[batch])
        loss = diffusion_loss(pipe, images[batch], masks[batch], states, pooled, object_weight)
        optimizer.zero_grad(set_to_none=True)
        cast(Any, loss).backward()
        optimizer.step()
        loss_value = loss.item()
        if on_log is not None and (step + 1) % 50 == 0:
            on_log(f"lora step {step + 1}/{steps} loss {loss_value:.4f}")
    unet.eval()
    embedding.requires_grad_(False)
    return loss_value
