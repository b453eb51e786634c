"""The demo model's text side: a one-token-per-word tokenizer and a small CLIP text encoder, built from scratch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from engine.demo.dataset import VOCABULARY

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
MAX_TOKENS = 20


def build_tokenizer(words: Sequence[str] = VOCABULARY) -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate((PAD, UNK, BOS, EOS, *words))}
    core = Tokenizer(WordLevel(vocab, unk_token=UNK))
    core.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    tokenizer: PreTrainedTokenizerFast = cast(Any, PreTrainedTokenizerFast)(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=MAX_TOKENS,
    )
    return tokenizer


def build_text_encoder(tokenizer: PreTrainedTokenizerFast, hidden: int = 128, layers: int = 2) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 32),
        max_position_embeddings=MAX_TOKENS,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return CLIPTextModel(config)


def tokenize(tokenizer: PreTrainedTokenizerFast, prompts: Sequence[str]) -> torch.Tensor:
    batch = tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    ids: torch.Tensor = batch["input_ids"]
    # A truncated prompt loses its end token; the pooled embedding is read there, so put it back.
    eos = int(tokenizer.eos_token_id)
    missing = ~(ids == eos).any(dim=1)
    ids[missing, -1] = eos
    return ids


def encode(text_encoder: CLIPTextModel, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token states for cross-attention, pooled state for the UNet's class embedding)."""
    output = text_encoder(input_ids=ids.to(text_encoder.device))
    return output.last_hidden_state, output.pooler_output
