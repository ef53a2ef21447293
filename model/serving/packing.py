"""Sequence packing: several short texts share one encoder row, so a micro-batch carries no padding.

sentence-transformers pads every text of a forward pass to the longest one. Overviews range from a
dozen to 256 tokens, so a small micro-batch of random lengths spends about half of its matrix work
on padding (and more of its attention), and the CPU cost per overview doubles exactly when the
service runs below its capacity. Packing concatenates texts into rows of `capacity` tokens, restarts
the position ids at each text and gives every row a block-diagonal attention mask, so each text
attends only to itself: the same computation as encoding it alone, without the padding. Mean pooling
then runs per text. This is valid for encoders with absolute position embeddings and mean pooling
(all-MiniLM-L6-v2 and other BERT-style sentence encoders); `unsupported_reason` says why another
model is left to sentence-transformers' own batching.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

ROW_CAPACITY = 128
"""Tokens per packed row. Longer texts get a row of their own (up to the model's max_seq_length).
Wider rows lost in measurements (docs/performance.md): dense attention over a whole row costs more
than the padding it saves."""

ROWS_PER_PASS = 8
"""Rows per forward pass; rows are sorted by fill, so a pass pads only to its own longest row."""

WIDTH_STEP = 16
"""A pass's width is rounded up to a multiple of this. oneDNN compiles and caches a kernel for every
input shape it sees; exact widths gave each pass a new shape, and the process grew without bound
(docs/performance.md, "Memory"). Rounded widths bound the shapes at ROWS_PER_PASS times
256 / WIDTH_STEP, for at most WIDTH_STEP - 1 tokens of padding per row."""

HALF_PRECISION_LONG_STEP = ROW_CAPACITY
"""The width step of a bf16 / fp16 pass that holds a text longer than a row. Such a text came out of
bf16 attention up to 8e-4 apart at different pass widths, enough to move a genre across its
threshold between one batch and another (an EPYC with avx512_bf16); at whole-row widths it was
bitwise equal alone and in any batch. Shorter rows were equal at every width, so they keep
WIDTH_STEP: whole rows everywhere cost bf16 12-15 % there."""

TOKEN_ALIGN = 4
"""Every text starts at a multiple of this many tokens in its row. ONNX Runtime's kernels group a row's
positions in fours, so a text shifted by one to three tokens was summed in another order: its fp32
embedding moved by ~1e-7, and in static int8 such a difference can cross a rounding step (up to 5e-3,
measured), so a text's genres depended on the texts it was batched with. Aligned starts gave
bitwise-equal embeddings at every offset (300 overviews x 16 offsets; docs/performance.md) for at most
3 tokens of padding per text."""


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Assigns texts to rows by first-fit decreasing; rows come back sorted by total length.

    Each text takes its length rounded up to TOKEN_ALIGN (`_aligned`), the room `_row_tensors`
    gives it, so that the next one starts aligned.

    Args:
        lengths: token count of each text (each >= 1).
        capacity: tokens per row; a longer text gets a row of its own.

    Returns:
        Rows as lists of text indices; every index appears exactly once.
    """
    if capacity < 1:
        raise ValueError("capacity must be >= 1")
    sizes = [_aligned(n) for n in lengths]
    rows: list[list[int]] = []
    fills: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        for r, fill in enumerate(fills):
            if fill + sizes[i] <= capacity:
                rows[r].append(i)
                fills[r] += sizes[i]
                break
        else:
            rows.append([i])
            fills.append(sizes[i])
    order = sorted(range(len(rows)), key=lambda r: fills[r])
    return [rows[r] for r in order]


PACKABLE_MODEL_TYPES = frozenset({"bert"})
"""Encoders whose position ids start at 0 for every text. RoBERTa, XLM-R and MPNet offset them by
the padding index, so their configs may say "absolute" and still not fit."""


def _pooling_mode(pooling: Any) -> str | None:
    config = pooling.get_config_dict()
    if "pooling_mode" in config:  # sentence-transformers >= 6
        return str(config["pooling_mode"])
    modes = [
        k.removeprefix("pooling_mode_").removesuffix("_tokens")
        for k, on in config.items()
        if k.startswith("pooling_mode_") and on
    ]
    return modes[0] if len(modes) == 1 else None


def unsupported_reason(st: SentenceTransformer) -> str | None:
    """Why packing would change this model's embeddings, or None when it is exact."""
    # Class names rather than imports: sentence-transformers 6 moved these modules (old paths warn).
    names = [type(m).__name__ for m in st]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return f"pipeline {names} is not Transformer + Pooling [+ Normalize]"
    pooling = _pooling_mode(st[1])
    if pooling != "mean":
        return f"pooling mode {pooling!r}, packing supports mean pooling only"
    if getattr(st, "default_prompt_name", None) or getattr(st, "truncate_dim", None):
        return "a default prompt or a truncated dimension (applied by encode only)"
    if getattr(st.tokenizer, "padding_side", "right") != "right":
        return "the tokenizer pads on the left"
    config = _encoder(st).config
    if config.model_type not in PACKABLE_MODEL_TYPES:
        return f"model type {config.model_type!r}: packing is verified for {sorted(PACKABLE_MODEL_TYPES)} only"
    position = getattr(config, "position_embedding_type", "absolute")
    if position != "absolute":
        return f"position embeddings {position!r}, packing needs absolute ones"
    return None


def _encoder(st: SentenceTransformer) -> Any:
    """The transformers model inside the first module (`auto_model` before sentence-transformers 6)."""
    transformer: Any = st[0]
    return getattr(transformer, "model", None) or transformer.auto_model


RowForward = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]
"""(input_ids, additive fp32 mask, position_ids) of some packed rows -> their last hidden states."""


def encode_packed(
    st: SentenceTransformer,
    texts: Sequence[str],
    capacity: int = ROW_CAPACITY,
    rows_per_pass: int = ROWS_PER_PASS,
    pool: Executor | None = None,
    workers: int = 1,
    forward: RowForward | None = None,
    tokenize_ahead: Executor | None = None,
) -> npt.NDArray[np.float32]:
    """Unit-length mean-pooled embeddings of `texts`, computed in packed rows.

    Tokenization is sentence-transformers' own (same truncation and special tokens), so each text's
    tokens are exactly those it would have been encoded with. With a `pool` of `workers` threads the
    passes run concurrently, and a batch of few rows is split so that every worker gets a pass.
    `forward` runs the rows on another runtime (ONNX Runtime) instead of the torch encoder. With a
    `tokenize_ahead` executor (one thread) the batch is tokenized and packed in groups of
    `TOKENIZE_GROUP` texts, the next group while the current one's passes run (`pipeline`).
    """
    import torch

    from model.serving.pipeline import TOKENIZE_GROUP, ahead, groups, tokenizer

    if not texts:
        raise ValueError("no texts to encode")
    tokenize = tokenizer(st)
    spans = groups(len(texts), TOKENIZE_GROUP if tokenize_ahead is not None else len(texts))
    module = _encoder(st)
    device = next(module.parameters()).device
    parallel = pool is not None and workers > 1
    long_step = WIDTH_STEP if module.dtype == torch.float32 else HALF_PRECISION_LONG_STEP
    lengths: list[int] = []

    def tokens(span: tuple[int, int]) -> tuple[torch.Tensor, list[int]]:
        features = tokenize(list(texts[span[0] : span[1]]))
        return features["input_ids"], [int(n) for n in features["attention_mask"].sum(dim=1).tolist()]

    def run(
        chunk: list[list[int]], ids: torch.Tensor, group_lengths: list[int], first: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if forward is not None:
            batch = _row_tensors(chunk, ids, group_lengths, torch.float32, WIDTH_STEP)
            hidden = forward(batch["input_ids"], batch["mask"], batch["position_ids"])
            flat = hidden.reshape(-1, hidden.shape[-1]).float()
        else:
            batch = _row_tensors(chunk, ids, group_lengths, module.dtype, long_step)
            with torch.inference_mode():
                hidden = module(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["mask"].to(device),
                    position_ids=batch["position_ids"].to(device),
                    token_type_ids=torch.zeros_like(batch["input_ids"]).to(device),
                ).last_hidden_state
            flat = hidden.reshape(-1, hidden.shape[-1]).float().cpu()
        owner = batch["owner"].reshape(-1)
        return torch.where(owner >= 0, owner + first, owner), flat

    # Each group's passes go to the pool as soon as it is packed, so the workers never wait for a
    # group boundary; without a pool they run here while the next group is tokenized.
    results: list[Future[tuple[torch.Tensor, torch.Tensor]] | tuple[torch.Tensor, torch.Tensor]] = []
    for (first, _), (ids, group_lengths) in zip(spans, ahead(tokens, spans, tokenize_ahead), strict=True):
        lengths += group_lengths
        rows = pack_rows(group_lengths, capacity)  # a text longer than a row gets a row of its own
        per_pass = max(1, min(rows_per_pass, -(-len(rows) // workers))) if parallel else rows_per_pass
        for start in range(0, len(rows), per_pass):
            chunk = rows[start : start + per_pass]
            args = (chunk, ids, group_lengths, first)
            results.append(pool.submit(run, *args) if parallel and pool is not None else run(*args))
    sums = torch.zeros(len(texts), int(module.config.hidden_size), dtype=torch.float32)
    for result in results:
        owner, flat = result.result() if isinstance(result, Future) else result
        keep = owner >= 0
        sums.index_add_(0, owner[keep], flat[keep])
    means = sums / torch.tensor(lengths, dtype=torch.float32)[:, None]
    out = torch.nn.functional.normalize(means, dim=1).numpy()
    return np.ascontiguousarray(out, dtype=np.float32)


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def _aligned(length: int) -> int:
    """Tokens a text takes in a row: its own, then padding up to the next text's aligned start."""
    return _round_up(length, TOKEN_ALIGN)


def _row_tensors(
    rows: list[list[int]], ids: torch.Tensor, lengths: Sequence[int], dtype: torch.dtype, long_step: int = WIDTH_STEP
) -> dict[str, Any]:
    """input_ids, position_ids, the block-diagonal mask and the owning text of every token of some
    rows; `long_step` rounds the width of a pass longer than a row."""
    import torch

    starts = [list(accumulate((_aligned(lengths[i]) for i in row[:-1]), initial=0)) for row in rows]
    longest = max(start[-1] + lengths[row[-1]] for start, row in zip(starts, rows, strict=True))
    width = _round_up(longest, WIDTH_STEP if longest <= ROW_CAPACITY else long_step)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)
    owner = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        for k, (i, offset) in enumerate(zip(row, starts[r], strict=True)):
            n = lengths[i]
            input_ids[r, offset : offset + n] = ids[i, :n]
            positions[r, offset : offset + n] = torch.arange(n)
            segment[r, offset : offset + n] = k
            owner[r, offset : offset + n] = i
    # A token attends to its own text only. Padding (-1) attends to padding, which keeps its softmax
    # finite; its outputs are never pooled.
    same = (segment[:, :, None] == segment[:, None, :])[:, None]
    # Additive (0 / most negative), which sdpa and eager attention both read the same way; eager
    # attention would add a boolean mask as 0/1 and so ignore it.
    mask = torch.zeros(same.shape, dtype=dtype).masked_fill_(~same, torch.finfo(dtype).min)
    return {"input_ids": input_ids, "position_ids": positions, "mask": mask, "owner": owner}


SELF_CHECK_TEXTS = (
    "A heist crew.",
    "Two sisters inherit a crumbling hotel on the coast and must decide whether to sell it.",
    "A young wizard learns that the school he loves hides a secret older than its walls, and that "
    "his friends are the only ones who believe him when the first student disappears.",
)


def packing_refusal(st: SentenceTransformer) -> str | None:
    """Why packing stays off for this loaded model, or None: its structure must allow packing
    (`unsupported_reason`) and one packed row must reproduce sentence-transformers' padded batch."""
    import torch

    reason = unsupported_reason(st)
    if reason is not None:
        return reason
    # A transformers release that ignored the block-diagonal mask would show here, not in scores.
    padded = st.encode(list(SELF_CHECK_TEXTS), normalize_embeddings=True, show_progress_bar=False)
    padded = np.asarray(padded, dtype=np.float32)
    padded /= np.linalg.norm(padded, axis=1, keepdims=True)  # normalised in bf16 they miss 1 by ~0.3 %
    cosine = (padded * encode_packed(st, SELF_CHECK_TEXTS)).sum(axis=1)
    # fp32 agrees to 1e-6 and bf16 to ~2e-3; an ignored mask gives 0.4-0.8 (measured).
    full_precision = next(st.parameters()).dtype == torch.float32
    if cosine.min() < (0.9999 if full_precision else 0.99):
        return f"packed embeddings differ from padded ones (cosine {cosine.min():.4f})"
    return None
