"""Fine-tuning the top layers of the sentence encoder with a multi-label head.

Why only the top layers: on two CPU cores a full fine-tune of all-MiniLM-L6-v2 costs ~3x a forward
pass per example and epoch. Freezing the lower layers lets their token states be computed once
(one bf16 forward pass) and reused by every epoch and fold, so training costs only the tuned layers.
The tuned layers are stored in the artifact (fp16, a few MB) and applied over the packaged encoder
at load time; the rest of the serving path (mean pooling, L2 normalisation, a logistic head) is
unchanged, so the head is a plain `DenseHead` on the tuned embedding.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from model.serving.classifier import DenseHead
from model.serving.tuned_layers import ENCODER_PREFIX

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FineTuneConfig:
    """Hyper-parameters of the top-layer fine-tune (defaults chosen by `genre-select`, see MODEL_CARD.md)."""

    tuned_layers: int = 3
    epochs: int = 3
    batch_size: int = 32
    lr_encoder: float = 1e-4
    lr_head: float = 2e-3
    weight_decay: float = 0.01
    warmup_share: float = 0.06
    logit_scale: float = 20.0
    """Unit-length embeddings times this scale feed the linear head (cosine-classifier style)."""
    max_seq_length: int = 256
    seed: int = 13

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TopLayerTuner:
    """Fine-tunes the last `tuned_layers` transformer layers of a loaded SentenceTransformer plus a
    linear multi-label head (BCE loss, AdamW, linear warm-up and decay, bf16 autocast on CPU).

    Usage: `states = tuner.lower_states(texts)` once, then `fit(states, y)` and `predict_proba(states)`
    any number of times (each `fit` starts again from the pretrained weights).
    """

    def __init__(self, st: Any, config: FineTuneConfig, labels: Sequence[str]) -> None:
        import torch

        self.st = st
        self.config = config
        self.labels = tuple(labels)
        bert = st[0].auto_model
        self.bert = bert
        self.n_layers = len(bert.encoder.layer)
        if not 1 <= config.tuned_layers <= self.n_layers:
            raise ValueError(f"tuned_layers must be 1..{self.n_layers}")
        self.first_tuned = self.n_layers - config.tuned_layers
        self.pretrained = {
            k: v.detach().clone().float()
            for k, v in bert.state_dict().items()
            if _layer_index(k) is not None and _layer_index(k) >= self.first_tuned  # type: ignore[operator]
        }
        self.dtype = torch.bfloat16 if bert.dtype == torch.bfloat16 or _cpu_bf16() else torch.float32

    # -- frozen part -------------------------------------------------------------------------
    def lower_states(self, texts: Sequence[str], desc: str = "frozen layers") -> list[torch.Tensor]:
        """Token states after the frozen layers, one (tokens, dim) bf16 tensor per text."""
        import torch

        tok = self.st.tokenizer
        bert = self.bert.float().eval()
        order = np.argsort([len(t) for t in texts], kind="stable")
        out: list[torch.Tensor | None] = [None] * len(texts)
        step = 64
        with torch.inference_mode(), self._autocast(), _every_core():
            for start in tqdm(range(0, len(texts), step), desc=desc, unit="batch", file=sys.stderr, leave=False):
                idx = order[start : start + step]
                enc = tok(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.config.max_seq_length,
                    return_tensors="pt",
                )
                h = bert.embeddings(input_ids=enc["input_ids"], token_type_ids=enc.get("token_type_ids"))
                mask = enc["attention_mask"]
                keep = mask[:, None, None, :].bool()
                for layer in bert.encoder.layer[: self.first_tuned]:
                    h = layer(h, attention_mask=keep)
                lengths = mask.sum(dim=1).tolist()
                for row, i in enumerate(idx):
                    out[i] = h[row, : lengths[row]].to(torch.bfloat16).clone()
        return [s for s in out if s is not None]

    # -- tuned part --------------------------------------------------------------------------
    def _autocast(self) -> Any:
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16)

    def _embed(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        import torch

        lengths = [s.shape[0] for s in states]
        width = max(lengths)
        h = torch.zeros(len(states), width, states[0].shape[1])
        mask = torch.zeros(len(states), width)
        for row, s in enumerate(states):
            h[row, : lengths[row]] = s.float()
            mask[row, : lengths[row]] = 1.0
        keep = mask[:, None, None, :].bool()
        for layer in self.bert.encoder.layer[self.first_tuned :]:
            h = layer(h, attention_mask=keep)
        pooled = (h * mask[:, :, None]).sum(dim=1) / mask.sum(dim=1, keepdim=True)
        return torch.nn.functional.normalize(pooled.float(), dim=-1)

    def fit(self, states: Sequence[torch.Tensor], y: npt.NDArray[np.bool_], desc: str = "fine-tune") -> TopLayerTuner:
        import torch

        c = self.config
        torch.manual_seed(c.seed)
        rng = np.random.default_rng(c.seed)
        self.bert.float()
        self.bert.load_state_dict(self.pretrained, strict=False)  # every fit starts from the pretrained layers
        tuned = torch.nn.ModuleList(self.bert.encoder.layer[self.first_tuned :])
        for p in self.bert.parameters():
            p.requires_grad_(False)
        for p in tuned.parameters():
            p.requires_grad_(True)
        targets = torch.tensor(y, dtype=torch.float32)
        prior = targets.mean(dim=0).clamp(1e-4, 1 - 1e-4)
        self.head = torch.nn.Linear(states[0].shape[1], len(self.labels))
        torch.nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(torch.log(prior / (1 - prior)))  # start at the label base rates
        optimizer = torch.optim.AdamW(
            [
                {"params": list(tuned.parameters()), "lr": c.lr_encoder},
                {"params": list(self.head.parameters()), "lr": c.lr_head},
            ],
            weight_decay=c.weight_decay,
        )
        batches_per_epoch = math.ceil(len(states) / c.batch_size)
        total = c.epochs * batches_per_epoch
        warmup = max(1, int(c.warmup_share * total))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / total)
        )
        loss_fn = torch.nn.BCEWithLogitsLoss()
        tuned.train()
        with tqdm(total=total, desc=desc, unit="step", file=sys.stderr) as bar, _every_core():
            for _ in range(c.epochs):
                for batch in self._batches(states, rng):
                    with self._autocast():
                        logits = self.head(self._embed([states[i] for i in batch]) * c.logit_scale)
                    loss = loss_fn(logits.float(), targets[batch])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        tuned.eval()
        return self

    def _batches(self, states: Sequence[torch.Tensor], rng: np.random.Generator) -> list[list[int]]:
        """Shuffled batches of similar length (little padding), in random order."""
        size = self.config.batch_size
        order = rng.permutation(len(states))
        batches: list[list[int]] = []
        for start in range(0, len(order), size * 50):
            pool = sorted(order[start : start + size * 50].tolist(), key=lambda i: states[i].shape[0])
            batches.extend(pool[i : i + size] for i in range(0, len(pool), size))
        rng.shuffle(batches)
        return batches

    def predict_proba(self, states: Sequence[torch.Tensor]) -> npt.NDArray[np.float32]:
        import torch

        out = np.zeros((len(states), len(self.labels)), np.float32)
        order = np.argsort([s.shape[0] for s in states], kind="stable")
        with torch.inference_mode(), self._autocast(), _every_core():
            for start in range(0, len(states), 128):
                idx = order[start : start + 128]
                logits = self.head(self._embed([states[i] for i in idx]) * self.config.logit_scale)
                out[idx] = torch.sigmoid(logits.float()).numpy()
        return out

    def encoder_tensors(self) -> dict[str, npt.NDArray[np.float16]]:
        """The tuned layers as fp16 arrays keyed like the encoder's state dict (prefixed)."""
        state = self.bert.state_dict()
        return {
            ENCODER_PREFIX + k: state[k].detach().float().numpy().astype(np.float16) for k in sorted(self.pretrained)
        }

    def dense_head(self) -> DenseHead:
        weight = self.head.weight.detach().float().numpy() * self.config.logit_scale
        return DenseHead.from_logistic(self.labels, weight, self.head.bias.detach().float().numpy())


def _layer_index(key: str) -> int | None:
    """Layer number of an `encoder.layer.<i>.` state-dict key, else None."""
    parts = key.split(".")
    if len(parts) > 2 and parts[0] == "encoder" and parts[1] == "layer" and parts[2].isdigit():
        return int(parts[2])
    return None


@contextmanager
def _every_core() -> Iterator[None]:
    """Torch on every core this process may use, for the calling thread's work, then as before.

    Training runs on one thread; a loaded embedder has set torch's process-wide count to its share
    per packed pass (one on two cores), which left the fine-tune on one core: 0.9-1.5 s per step
    on this project's 2-core Xeon without AMX, 0.6 s on both cores (1,818 steps in 18 min).
    """
    import torch

    from model.serving.embedder import available_cpus

    before = torch.get_num_threads()
    torch.set_num_threads(available_cpus())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cpu_bf16() -> bool:
    from model.serving.embedder import cpu_supports_bf16

    return cpu_supports_bf16()
