"""Tokenization one step ahead of the encoder (issue 17, item 4).

A micro-batch used to be tokenized whole before its first forward pass, so the encoder waited for the
tokenizer and the tokenizer for the encoder. Here the batch is cut into groups: while the encoder
runs one group, a single background thread tokenizes the next. The fast tokenizer is Rust and
releases the GIL, so the two overlap for real. One thread per embedder also means the tokenizer
object is never used by two threads at once (its padding and truncation state is mutable).

On a CPU whose cores the encoder already keeps busy it can save at most the tokenizer's share of a
batch (3.4-4 % on a 2-core Xeon), and it measured slower there (0.94-0.95 x, `benchmarks/
tokenize_ahead.py`): the tokenizer thread takes a core from the passes, and rows packed per group
fill less well than rows packed over the whole batch. On a GPU the encoder waits on the CPU-side
tokenizer (on an H100 tokenizing took longer than the encoder's work), so there it is the
single-process limit. `SentenceEmbedder` therefore tokenizes ahead by default only off the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

T = TypeVar("T")
R = TypeVar("R")

TOKENIZE_GROUP = 64
"""Texts tokenized at a time when tokenization runs ahead: about 20 ms of tokenizer work on this
project's CPUs, small next to the ~500 ms the encoder spends on the group before it."""


def tokenizer(st: SentenceTransformer) -> Any:
    """sentence-transformers' own tokenization of a list of texts, as its encoder sees them (same
    truncation and special tokens, padded on the right). `preprocess` replaced `tokenize` in
    sentence-transformers 6; both are accepted."""
    transformer: Any = st[0]
    return getattr(transformer, "preprocess", None) or transformer.tokenize


def ahead(fn: Callable[[T], R], items: Sequence[T], executor: Executor | None) -> Iterator[R]:
    """`map(fn, items)`, with `fn` of the next item running on `executor` while the caller works on
    the current result. In order; an exception raised by `fn` surfaces where its result is taken.
    Without an executor it is plain `map`."""
    if executor is None:
        yield from map(fn, items)
        return
    pending: Future[R] | None = executor.submit(fn, items[0]) if items else None
    for k in range(len(items)):
        assert pending is not None
        current = pending
        pending = executor.submit(fn, items[k + 1]) if k + 1 < len(items) else None
        try:
            yield current.result()
        except BaseException:
            if pending is not None:
                pending.cancel()
            raise


def groups(n: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) spans that cut range(n) into runs of `size` (the last one shorter)."""
    if size < 1:
        raise ValueError("group size must be >= 1")
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def encode_padded(
    st: SentenceTransformer, texts: Sequence[str], batch_size: int, executor: Executor | None
) -> npt.NDArray[np.float32]:
    """Unit-length embeddings of `texts` in padded batches, as `SentenceTransformer.encode` computes
    them (texts sorted by length so a batch pads little), with each batch tokenized ahead.

    The path for devices without packing (a GPU): there the encoder is fast and the tokenizer, on
    the CPU, is what it waits for.
    """
    import torch

    tokenize = tokenizer(st)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    spans = groups(len(order), batch_size)
    device = st.device
    out = np.empty((len(texts), 0), dtype=np.float32)

    def features(span: tuple[int, int]) -> dict[str, Any]:
        return dict(tokenize([texts[i] for i in order[span[0] : span[1]]]))

    parts: list[npt.NDArray[np.float32]] = []
    for batch in ahead(features, spans, executor):
        with torch.inference_mode():
            moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            vectors = st.forward(moved)["sentence_embedding"].float()
            parts.append(torch.nn.functional.normalize(vectors, dim=1).cpu().numpy())
    if parts:
        stacked = np.concatenate(parts)
        out = np.empty_like(stacked)
        out[order] = stacked
    return np.ascontiguousarray(out, dtype=np.float32)
