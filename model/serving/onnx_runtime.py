"""The encoder on ONNX Runtime: fp32 with graph optimisations, or int8 with dynamic quantization.

ONNX Runtime's CPU kernels beat torch's fp32 ones on CPUs without AMX, where bf16 is emulated and
loses (issue 17's measurements), and its int8 kernels use VNNI where the CPU has it. The served
encoder (base layers plus the artifact's tuned layers) is exported from torch once per model
revision and cached on disk; packed rows (`model.serving.packing`) run on it unchanged, so the
embeddings are those of the torch encoder up to the runtime's rounding. Whether a variant may serve
a model is decided by its measured parity on the held-out split (`model.training.backend_parity`).

Optional: `pip install 'genre-stream[onnx]'` (onnxruntime, onnx).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.serving.backends import cache_root

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

VARIANTS = ("onnx-fp32", "onnx-int8")
BATCH_DEPENDENT = frozenset({"onnx-int8"})
"""Backends whose output for a text depends on the texts it is batched with: dynamic quantization
picks each pass's activation scale from the whole pass, so the same overview can get other genres
in another batch (a cached embedding, a replay after a crash). `auto` never picks them; an operator
who accepts that sets `GENRE_MODEL_BACKEND=onnx-int8` explicitly."""
MIN_SELF_CHECK_COSINE = {"onnx-fp32": 0.9999, "onnx-int8": 0.95}
"""A session must reproduce the torch encoder this closely on known texts before it serves (fp32
agrees to 1e-6; int8's worst text over the held-out split was 0.98)."""
OPSET = 18
INPUTS = ("input_ids", "mask", "position_ids")


def available() -> bool:
    """True when ONNX Runtime and the exporter's `onnx` package are installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_dir() -> Path:
    return cache_root() / "onnx"


def _rows_module(encoder: Any) -> torch.nn.Module:
    """The encoder as a function of packed rows: what the exporter traces."""
    import torch

    class Rows(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
            out = self.encoder(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position_ids,
                token_type_ids=torch.zeros_like(input_ids),
            )
            hidden: torch.Tensor = out.last_hidden_state
            return hidden

    return Rows().eval()


def model_file(module: Any, revision: str, variant: str, directory: Path | None = None) -> Path:
    """The ONNX file of `variant` for this encoder revision, exported (and quantized) on first use.

    Written to a temporary name and renamed, so replicas sharing the cache never read half a file.
    """
    import torch

    if variant not in VARIANTS:
        raise ValueError(f"unknown ONNX variant {variant!r} (known: {', '.join(VARIANTS)})")
    directory = directory or cache_dir()
    # Owner-only: whoever can write these files chooses what the service computes (checked on load too).
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    stem = hashlib.sha256(f"{revision}|{torch.__version__}|opset{OPSET}".encode()).hexdigest()[:24]
    fp32_path, int8_path = directory / f"{stem}-fp32.onnx", directory / f"{stem}-int8.onnx"
    if not fp32_path.is_file():
        _export(module, fp32_path)
    if variant == "onnx-int8" and not int8_path.is_file():
        _quantize(fp32_path, int8_path)
    return int8_path if variant == "onnx-int8" else fp32_path


def _export(module: Any, target: Path) -> None:
    import torch

    from model.serving.packing import _row_tensors

    ids = torch.tensor([[101, 7592, 102], [101, 2088, 102]])  # two 3-token texts packed in one row
    example = _row_tensors([[0, 1]], ids, [3, 3], torch.float32)
    dynamic = {"input_ids": {0: "rows", 1: "width"}, "position_ids": {0: "rows", 1: "width"}}
    dynamic["mask"] = {0: "rows", 2: "width", 3: "width"}
    fd, partial = tempfile.mkstemp(suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        # The TorchScript exporter warns that it is legacy, and the tracer about Python-side shape
        # arithmetic; both are expected here (the self-check proves the result), not news for the log.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _rows_module(module),
                (example["input_ids"], example["mask"], example["position_ids"]),
                partial,
                input_names=list(INPUTS),
                output_names=["hidden"],
                dynamic_axes={**dynamic, "hidden": {0: "rows", 1: "width"}},
                opset_version=OPSET,
                dynamo=False,  # the TorchScript exporter: no onnxscript, and a few seconds for MiniLM
            )
        Path(partial).replace(target)
    finally:
        Path(partial).unlink(missing_ok=True)
    logger.info("encoder exported to ONNX: %s", target)


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fd, partial = tempfile.mkstemp(suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        # Per-channel weights: per-tensor ones moved embeddings to cosine 0.96 (benchmarks/onnx_probe.py).
        quantize_dynamic(source, partial, weight_type=QuantType.QInt8, per_channel=True)
        Path(partial).replace(target)
    finally:
        Path(partial).unlink(missing_ok=True)
    logger.info("encoder quantized to int8: %s", target)


class OnnxRows:
    """Runs packed rows on an ONNX Runtime session (thread-safe: passes may run at once).

    Args:
        path: the exported encoder.
        threads: intra-op threads per pass (the pass workers share the cores).
    """

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        self.path = path
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        import torch

        feeds = {"input_ids": input_ids.numpy(), "mask": mask.numpy(), "position_ids": position_ids.numpy()}
        return torch.from_numpy(self._session.run(None, feeds)[0])


def checked_rows(st: Any, revision: str, variant: str, threads: int) -> OnnxRows:
    """A session for `variant` that reproduces the loaded torch encoder on known texts.

    The cached file is re-exported once when it does not (a file changed or broken in the cache
    must not serve); a fresh export that still differs is refused.

    Raises:
        ArtifactMismatchError: the exported encoder does not reproduce the torch one.
    """
    import numpy as np

    from model.serving.errors import ArtifactMismatchError
    from model.serving.packing import SELF_CHECK_TEXTS, _encoder, encode_packed

    expected = encode_packed(st, SELF_CHECK_TEXTS)
    cosine = 0.0
    for attempt in range(2):
        path = model_file(_encoder(st), revision, variant)
        rows = OnnxRows(path, threads)
        cosine = float(np.min((expected * encode_packed(st, SELF_CHECK_TEXTS, forward=rows)).sum(axis=1)))
        if cosine >= MIN_SELF_CHECK_COSINE[variant]:
            return rows
        logger.warning("%s in the cache differs from the encoder (cosine %.4f); exporting it again", path, cosine)
        if attempt == 0:
            for stale in path.parent.glob(path.name.rsplit("-", 1)[0] + "-*.onnx"):
                stale.unlink(missing_ok=True)
    raise ArtifactMismatchError(f"the {variant} export does not reproduce the encoder (cosine {cosine:.4f})")
