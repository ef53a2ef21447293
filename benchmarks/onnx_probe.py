"""Would ONNX Runtime pass the backend rule? Speed and cosine to the served fp32 embeddings.

Not part of `make bench`: it needs `onnxruntime` and `onnx`, which the project does not install.
sentence-transformers' own ONNX backend needs `optimum-onnx`, whose releases pin transformers < 4.58
while this stack runs transformers 5 (pip reports the conflict), so this probe exports the served
encoder itself (base layers + the artifact's tuned layers) with `torch.onnx.export` and quantizes it
with onnxruntime's dynamic int8 quantizer, in the variants that matter:

    pip install onnxruntime onnx && python -m benchmarks.onnx_probe --n 2000

Pooling and normalisation are done as sentence-transformers does (mean over the attention mask,
L2). The rule a backend must pass to be offered: cosine >= 0.99 to fp32 for every text (and
held-out micro-F1 within 0.005), and it is only worth offering if it beats bf16.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks.bench import DATA
from model.serving.inputs import TITLE_AND_OVERVIEW, frame_documents
from model.serving.predictor import load_predictor

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class LastHiddenState(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> Any:
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state


def embed(session: Any, st: Any, texts: Sequence[str], batch: int) -> np.ndarray:
    tokenizer, max_length = st.tokenizer, st.max_seq_length
    order = np.argsort([len(t) for t in texts])  # length-aware batches, as the service encodes
    out = np.zeros((len(texts), st.get_sentence_embedding_dimension()), np.float32)
    for start in range(0, len(texts), batch):
        idx = order[start : start + batch]
        enc = tokenizer(
            [texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="np"
        )
        hidden = session.run(None, {k: enc[k].astype(np.int64) for k in INPUTS})[0]
        mask = enc["attention_mask"][..., None].astype(np.float32)
        vectors = (hidden * mask).sum(1) / mask.sum(1)
        out[idx] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return out


def main() -> None:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "onnx_probe.json")
    args = p.parse_args()
    frame = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    frame = frame[frame["overview"].str.len() > 20].sample(n=args.n, random_state=7)
    texts = frame_documents(frame, TITLE_AND_OVERVIEW)

    fp32 = load_predictor(backend="fp32")  # the committed artifact: base encoder + its tuned layers
    st = fp32.embedder.model_
    started = time.perf_counter()
    reference = fp32.embedder.transform(texts)
    results: dict[str, Any] = {"torch fp32": {"per_s": round(len(texts) / (time.perf_counter() - started), 1)}}
    bf16 = load_predictor(backend="bf16").embedder
    started = time.perf_counter()
    bf16.transform(texts)
    results["torch bf16"] = {"per_s": round(len(texts) / (time.perf_counter() - started), 1)}

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "encoder.onnx")
        sample = st.tokenizer(texts[:4], padding=True, return_tensors="pt")
        torch.onnx.export(
            LastHiddenState(st[0].auto_model.eval()),
            tuple(sample[k] for k in INPUTS),
            path,
            input_names=list(INPUTS),
            output_names=["hidden"],
            dynamic_axes={k: {0: "batch", 1: "tokens"} for k in (*INPUTS, "hidden")},
            opset_version=17,
            dynamo=False,
        )
        matmuls = [n.name for n in onnx.load(path).graph.node if n.op_type == "MatMul"]
        ffn_out = [n for n in matmuls if "/output/dense/" in n and "attention" not in n]
        variants: dict[str, str] = {"ort fp32": path}
        for name, kwargs in {
            "ort int8 per-tensor": {},
            "ort int8 per-channel": {"per_channel": True},
            "ort int8 per-channel, FFN output fp32": {"per_channel": True, "nodes_to_exclude": ffn_out},
        }.items():
            variants[name] = str(Path(tmp) / f"{len(variants)}.onnx")
            quantize_dynamic(path, variants[name], weight_type=QuantType.QInt8, **kwargs)
        for name, model_path in variants.items():
            session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
            embed(session, st, texts[:64], args.batch)  # warm-up
            started = time.perf_counter()
            vectors = embed(session, st, texts, args.batch)
            rate = len(texts) / (time.perf_counter() - started)
            cosine = (vectors * reference).sum(axis=1)
            results[name] = {
                "per_s": round(rate, 1),
                "min_cosine": round(float(cosine.min()), 4),
                "mean_cosine": round(float(cosine.mean()), 4),
                "passes_cosine_rule": bool(cosine.min() >= 0.99),
            }
            print(name, results[name], flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
