"""The encoder on ONNX Runtime: fp32 with graph optimisations, or int8 (dynamic or static quantization).

ONNX Runtime's CPU kernels beat torch's fp32 ones on CPUs without AMX, where bf16 is emulated and
loses (issue 17's measurements), and its int8 kernels use VNNI where the CPU has it. The served
encoder (base layers plus the artifact's tuned layers) is exported from torch once per model
revision and cached on disk; packed rows (`model.serving.packing`) run on it unchanged, so the
embeddings are those of the torch encoder up to the runtime's rounding.

Two int8 variants, because they trade differently: dynamic quantization (`onnx-int8`) is the fastest
but scales each pass by its own activations, so a text's embedding depends on its batch companions;
static quantization (`onnx-int8-static`) fixes every activation scale once, from a calibration pass
over fixed texts, so a text always gets the same embedding, and `auto` may choose it. Whether a
variant may serve a model is decided by its measured parity on the held-out split
(`model.training.backend_parity`).

Optional: `pip install 'genre-stream[onnx]'` (onnxruntime, onnx).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.serving.backends import cache_root

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

VARIANTS = ("onnx-fp32", "onnx-int8", "onnx-int8-static")
BATCH_DEPENDENT = frozenset({"onnx-int8"})
"""Backends whose output for a text depends on the texts it is batched with: dynamic quantization
picks each pass's activation scale from the whole pass, so the same overview can get other genres
in another batch (a cached embedding, a replay after a crash). `auto` never picks them; an operator
who accepts that sets `GENRE_MODEL_BACKEND=onnx-int8` explicitly."""
MIN_SELF_CHECK_COSINE = {"onnx-fp32": 0.9999, "onnx-int8": 0.95, "onnx-int8-static": 0.95}
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


def model_file(
    module: Any,
    revision: str,
    variant: str,
    directory: Path | None = None,
    calibration: Callable[[], list[dict[str, Any]]] | None = None,
) -> Path:
    """The ONNX file of `variant` for this encoder revision, exported (and quantized) on first use.

    Written to a temporary name and renamed, so replicas sharing the cache never read half a file.
    `calibration` gives the packed-row inputs static quantization fixes its scales on
    (`calibration_feeds`); only `onnx-int8-static` needs it.
    """
    import torch

    if variant not in VARIANTS:
        raise ValueError(f"unknown ONNX variant {variant!r} (known: {', '.join(VARIANTS)})")
    directory = directory or cache_dir()
    # Owner-only: whoever can write these files chooses what the service computes (checked on load too).
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    stem = hashlib.sha256(f"{revision}|{torch.__version__}|opset{OPSET}".encode()).hexdigest()[:24]
    paths = {
        "onnx-fp32": directory / f"{stem}-fp32.onnx",
        "onnx-int8": directory / f"{stem}-int8.onnx",
        "onnx-int8-static": directory / f"{stem}-int8s{STATIC_RECIPE}.onnx",
    }
    if not paths["onnx-fp32"].is_file():
        _export(module, paths["onnx-fp32"])
    target = paths[variant]
    if variant == "onnx-int8" and not target.is_file():
        _quantize(paths["onnx-fp32"], target)
    if variant == "onnx-int8-static" and not target.is_file():
        if calibration is None:
            raise ValueError("onnx-int8-static needs calibration inputs")
        _quantize_static(paths["onnx-fp32"], target, calibration())
    return target


def _export(module: Any, target: Path) -> None:
    import torch

    from model.serving.packing import _row_tensors

    ids = torch.tensor([[101, 7592, 102], [101, 2088, 102]])  # two 3-token texts packed in one row
    example = _row_tensors([[0, 1]], ids, [3, 3], torch.float32)
    dynamic = {"input_ids": {0: "rows", 1: "width"}, "position_ids": {0: "rows", 1: "width"}}
    dynamic["mask"] = {0: "rows", 2: "width", 3: "width"}
    # The TorchScript exporter warns that it is legacy, and the tracer about Python-side shape
    # arithmetic; both are expected here (the self-check proves the result), not news for the log.
    with _written_atomically(target) as partial, torch.inference_mode(), warnings.catch_warnings():
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
    logger.info("encoder exported to ONNX: %s", target)


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _written_atomically(target) as partial:
        # Per-channel weights: per-tensor ones moved embeddings to cosine 0.96 (benchmarks/onnx_probe.py).
        quantize_dynamic(source, partial, weight_type=QuantType.QInt8, per_channel=True)
    logger.info("encoder quantized to int8: %s", target)


STATIC_RECIPE = "v2"
"""Names the calibration texts, their row layout (v2: aligned text starts, packing.TOKEN_ALIGN) and
the node choice below; part of the cached file's name, so a file calibrated otherwise is not reused."""
CALIBRATION_TEXTS = 256


def calibration_feeds(st: Any) -> list[dict[str, Any]]:
    """Packed-row inputs of fixed overview-like texts, as the service's passes shape them.

    Fixed texts rather than training data: the scales (and so every served embedding) must be the
    same on every host that exports the file, with or without the dataset. Measured on the held-out
    overviews, scales from these texts reproduce fp32 as closely as scales from 512 real overviews.
    """
    import torch

    from model.serving.backends import sample_texts
    from model.serving.packing import SELF_CHECK_TEXTS, _encoder, encode_packed

    hidden = int(_encoder(st).config.hidden_size)
    feeds: list[dict[str, Any]] = []

    def record(input_ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        feeds.append({"input_ids": input_ids.numpy(), "mask": mask.numpy(), "position_ids": position_ids.numpy()})
        return torch.zeros(*input_ids.shape, hidden)  # what it returns is not used

    texts = [*SELF_CHECK_TEXTS, *sample_texts(CALIBRATION_TEXTS)]
    for start in range(0, len(texts), 64):
        encode_packed(st, texts[start : start + 64], forward=record)
    return feeds


def _static_nodes(model: Any) -> list[str]:
    """The weight MatMuls whose input one fixed scale can cover: all but the feed-forward down
    projections. Their input is GELU's output, whose long tail a single static scale clips or
    blurs (mean cosine to fp32 fell to 0.936 with them quantized, 0.996 without; held-out overviews).
    The attention products (activation x activation) stay fp32 too."""
    matrices = {w.name: tuple(w.dims) for w in model.graph.initializer if len(w.dims) == 2}
    weights = {
        node.name: matrices[node.input[1]]
        for node in model.graph.node
        if node.op_type == "MatMul" and node.input[1] in matrices
    }
    hidden = min(rows for rows, _ in weights.values())  # the down projections read the wider inner size
    return [name for name, (rows, _) in weights.items() if rows == hidden]


def _quantize_static(source: Path, target: Path, feeds: list[dict[str, Any]]) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Feeds(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type hints
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._feeds, None)

    with _written_atomically(target) as partial, _quantizer_advice_dropped():
        quantize_static(
            source,
            partial,
            Feeds(),
            # QOperator kernels (QLinearMatMul) reproduced fp32 closer than QDQ pairs (0.996 vs 0.994).
            quant_format=QuantFormat.QOperator,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_quantize=_static_nodes(onnx.load(source, load_external_data=False)),
            calibration_providers=["CPUExecutionProvider"],
        )
    logger.info("encoder quantized to int8 with static scales: %s", target)


@contextlib.contextmanager
def _written_atomically(target: Path) -> Iterator[str]:
    """A temporary path beside `target`, renamed onto it when the block succeeds and removed either
    way: replicas sharing the cache never read half a file."""
    fd, partial = tempfile.mkstemp(suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        yield partial
        Path(partial).replace(target)
    finally:
        Path(partial).unlink(missing_ok=True)


@contextlib.contextmanager
def _quantizer_advice_dropped() -> Iterator[None]:
    """The quantizer advises pre-processing on the root logger at every call; the self-check, not
    that advice, says whether the file is good, so it stays out of the service's log."""

    def keep(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or "pre-processing" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


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
        path = model_file(_encoder(st), revision, variant, calibration=lambda: calibration_feeds(st))
        rows = OnnxRows(path, threads)
        cosine = float(np.min((expected * encode_packed(st, SELF_CHECK_TEXTS, forward=rows)).sum(axis=1)))
        if cosine >= MIN_SELF_CHECK_COSINE[variant]:
            return rows
        logger.warning("%s in the cache differs from the encoder (cosine %.4f); exporting it again", path, cosine)
        if attempt == 0:
            for stale in path.parent.glob(path.name.rsplit("-", 1)[0] + "-*.onnx"):
                stale.unlink(missing_ok=True)
    raise ArtifactMismatchError(f"the {variant} export does not reproduce the encoder (cosine {cosine:.4f})")
