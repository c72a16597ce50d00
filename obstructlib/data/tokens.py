"""Caption token ids: tokenise once, insert or strip ids after the start token, collate pairs.

Token ids are edited directly, never re-tokenised text, so a trigger is exactly the ids the model
sees. These are the data-side operations of the text triggers in
:mod:`obstructlib.primitives.text_triggers` (HotFlip search lives there).

References:
    Liu et al., Multimodal Unlearnable Examples (MEM), arXiv:2407.16307 (per-pair caption triggers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, cast

import torch
from torch import nn

from obstructlib.errors import ConfigError

__all__ = ["insert_trigger", "pair_collate", "strip_tokens", "tokenize_captions"]


class _Tokenizing(Protocol):
    def tokenize(self, texts: list[str]) -> torch.Tensor: ...


def tokenize_captions(model: nn.Module, captions: Sequence[str], chunk: int = 4096) -> torch.Tensor:
    """Every caption tokenised once with the model's tokenizer (int32 to halve the memory).

    Shape:
        Returns ``(N, context_length)`` int32 on CPU.
    """
    # a DDP-wrapped model tokenises like the bare one (a ClipModel: it has ``tokenize``)
    bare = cast(_Tokenizing, getattr(model, "module", model))
    parts = [
        bare.tokenize(list(captions[i : i + chunk])).to(torch.int32) for i in range(0, len(captions), chunk)
    ]
    if not parts:
        raise ConfigError("no captions to tokenise: the caption dataset is empty")
    return torch.cat(parts)


def _check_tokens(tokens: torch.Tensor, eot_token_id: int) -> None:
    if tokens.ndim != 2:
        raise ConfigError(f"tokens must be (B, context_length), got shape {tuple(tokens.shape)}")
    if tokens.shape[0] and not bool((tokens == eot_token_id).any(dim=1).all()):
        raise ConfigError(f"every caption needs its end-of-text token {eot_token_id}: tokenize with the model")


def insert_trigger(
    tokens: torch.Tensor, trigger: torch.Tensor, eot_token_id: int, position: int = 1
) -> torch.Tensor:
    """Tokens with ``trigger`` inserted at ``position`` (right after the start token by default).

    The caption body moves right by ``k``; if it no longer fits, it is truncated and the last
    position becomes the end-of-text token again (CLIP pools at the end token, so it must survive).
    MEM's official code prefixes ``"The " * k`` and overwrites those ids; the result is the same.

    Args:
        tokens: caption ids from the model's tokenizer, each row ``[SOT, ..., EOT, 0, ...]``.
        trigger: ids to insert, one row per caption (``(B, k)``) or one shared row (``(k,)``).
        eot_token_id: the end-of-text id (``ClipModel.eot_token_id``).
        position: insertion index (1 = after SOT).

    Shape:
        ``(B, L)``, ``(B, k)`` -> ``(B, L)`` int64.

    Example:
        >>> insert_trigger(torch.tensor([[9, 5, 7, 0, 0]]), torch.tensor([[3, 4]]), eot_token_id=7)
        tensor([[9, 3, 4, 5, 7]])
    """
    _check_tokens(tokens, eot_token_id)
    trigger = trigger.to(tokens.device, tokens.dtype)
    if trigger.ndim == 1:
        trigger = trigger.expand(tokens.shape[0], -1)
    k = trigger.shape[1]
    if k == 0:
        return tokens.clone()
    if trigger.shape[0] != tokens.shape[0]:
        raise ConfigError(f"{trigger.shape[0]} triggers for {tokens.shape[0]} captions: pass one per caption")
    length = tokens.shape[1]
    if not 1 <= position < length - k:
        raise ConfigError(f"a {k}-token trigger at position {position} does not fit {length} tokens")
    out = torch.cat([tokens[:, :position], trigger, tokens[:, position:]], dim=1)[:, :length].clone()
    lost = ~(out == eot_token_id).any(dim=1)  # the end token was pushed out: truncate the caption
    out[lost, -1] = eot_token_id
    return out


def strip_tokens(tokens: torch.Tensor, k: int, eot_token_id: int, position: int = 1, pad_id: int = 0) -> torch.Tensor:
    """Remove ``k`` ids at ``position`` (never the end token) and pad on the right.

    The countermeasure of a hacker who guesses that the first caption words are a trigger.

    Shape:
        ``(B, L)`` -> ``(B, L)``.

    Example:
        >>> strip_tokens(torch.tensor([[9, 3, 4, 5, 7]]), 2, eot_token_id=7)
        tensor([[9, 5, 7, 0, 0]])
    """
    _check_tokens(tokens, eot_token_id)
    if k < 0:
        raise ConfigError(f"k={k}: strip 0 or more tokens")
    eot_pos = (tokens == eot_token_id).int().argmax(dim=1)
    # at most the tokens between ``position`` and the end token can go
    body = (eot_pos - position).clamp(min=0)
    out = torch.full_like(tokens, pad_id)
    for i in range(tokens.shape[0]):
        drop = min(k, int(body[i]))
        row = torch.cat([tokens[i, :position], tokens[i, position + drop : int(eot_pos[i]) + 1]])
        out[i, : len(row)] = row
    return out


def pair_collate(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (B, C, H, W), tokens (B, L))`` from :class:`ProtectedPairs` items (for ``fit_clip``)."""
    return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
