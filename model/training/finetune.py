"""Fine-tuning the top layers of the sentence encoder with a multi-label head.

Why only the top layers: on two CPU cores a full fine-tune of all-MiniLM-L6-v2 costs ~3x a forward
pass per example and epoch. Freezing the lower layers lets their token states be computed once
(one bf16 forward pass) and reused by every epoch and fold, so training costs only the tuned layers.
The tuned layers are stored in the artifact (fp16, a few MB) and applied over the packaged encoder
at load time; the rest of the serving path (mean pooling, L2 normalisation, a logistic head) is
unchanged, so the head is a plain `DenseHead` on the tuned embedding.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from model.serving.classifier import DenseHead
from model.serving.errors import ModelError
from model.serving.tuned_layers import ENCODER_PREFIX

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


class LossName(StrEnum):
    BCE = "bce"
    """Binary cross-entropy, every genre and every example weighted alike."""
    WEIGHTED = "weighted"
    """BCE with each genre's positives weighted by sqrt(negatives / positives), capped at 10: rare
    genres get more gradient without the instability of the full inverse-frequency weight."""
    FOCAL = "focal"
    """Focal BCE (Lin et al. 2017): each term scaled by (1 - p_t) ** gamma, so the many easy
    negatives of a rare genre stop dominating the loss."""


MAX_POSITIVE_WEIGHT = 10.0


def multilabel_loss(
    name: LossName, logits: torch.Tensor, targets: torch.Tensor, prior: torch.Tensor, gamma: float = 2.0
) -> torch.Tensor:
    """Mean multi-label loss of `logits` against 0/1 `targets` (both examples x genres); `prior` is
    each genre's positive rate in the training rows (used by the weighted loss)."""
    import torch

    if name is LossName.WEIGHTED:
        weight = torch.sqrt((1 - prior) / prior).clamp(min=1.0, max=MAX_POSITIVE_WEIGHT)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight)
    terms = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if name is LossName.FOCAL:
        p_true = torch.exp(-terms)  # the probability given to the true value, recovered from its -log
        terms = terms * (1 - p_true) ** gamma
    return terms.mean()


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
    loss: LossName = LossName.BCE
    focal_gamma: float = 2.0
    patience: int = 0
    """With validation rows: stop after this many epochs without a lower validation loss and keep
    the best epoch's weights. 0 trains every epoch and keeps the last."""
    seed: int = 13

    def as_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, StrEnum) else v for k, v in asdict(self).items()}


def add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    """The fine-tune's options, shared by genre-train and genre-select."""
    d = FineTuneConfig
    p.add_argument("--epochs", type=int, default=d.epochs, help="fine-tune epochs")
    p.add_argument(
        "--tuned-layers", type=int, default=d.tuned_layers, help="top encoder layers tuned (6: all of MiniLM-L6)"
    )
    p.add_argument("--loss", default=d.loss.value, choices=[n.value for n in LossName], help="fine-tune loss")
    p.add_argument("--focal-gamma", type=float, default=d.focal_gamma, help="focusing exponent of --loss focal")
    p.add_argument(
        "--patience",
        type=int,
        default=d.patience,
        help="early stopping on the validation rows: epochs without improvement (0: off)",
    )


def finetune_config(args: argparse.Namespace) -> FineTuneConfig:
    if args.epochs < 1 or args.patience < 0 or args.focal_gamma < 0:
        raise ModelError("--epochs must be >= 1, --patience and --focal-gamma >= 0")
    return FineTuneConfig(
        epochs=args.epochs,
        tuned_layers=args.tuned_layers,
        loss=LossName(args.loss),
        focal_gamma=args.focal_gamma,
        patience=args.patience,
        seed=args.seed,
    )


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

    def fit(
        self,
        states: Sequence[torch.Tensor],
        y: npt.NDArray[np.bool_],
        desc: str = "fine-tune",
        validation: tuple[Sequence[torch.Tensor], npt.NDArray[np.bool_]] | None = None,
    ) -> TopLayerTuner:
        """Fits on `states`/`y`; with `validation` rows and `patience`, stops early and keeps the
        epoch with the lowest validation loss."""
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
        stopping = _EarlyStopping(c.patience) if validation is not None and c.patience > 0 else None
        self.validation_losses_: list[float] = []
        with tqdm(total=total, desc=desc, unit="step", file=sys.stderr) as bar, _every_core():
            for epoch in range(c.epochs):
                tuned.train()
                for batch in self._batches(states, rng):
                    with self._autocast():
                        logits = self.head(self._embed([states[i] for i in batch]) * c.logit_scale)
                    loss = multilabel_loss(c.loss, logits.float(), targets[batch], prior, c.focal_gamma)
                    optimizer.zero_grad(set_to_none=True)
                    torch.autograd.backward(loss)
                    optimizer.step()
                    schedule.step()
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
                tuned.eval()
                if stopping is not None and validation is not None:
                    val_states, val_y = validation
                    val_loss = float(
                        multilabel_loss(
                            c.loss,
                            torch.from_numpy(self.logits(val_states)),
                            torch.tensor(val_y, dtype=torch.float32),
                            prior,
                            c.focal_gamma,
                        )
                    )
                    logger.info("epoch %d: validation loss %.5f", epoch + 1, val_loss)
                    self.validation_losses_.append(val_loss)
                    if stopping.should_stop(val_loss, lambda: self._tuned_state(tuned)):
                        bar.update(total - bar.n)
                        break
        if stopping is not None and stopping.best_state is not None:
            logger.info("keeping epoch %d (validation loss %.5f)", stopping.best_epoch, stopping.best_loss)
            self._restore(tuned, stopping.best_state)
        tuned.eval()
        return self

    def _tuned_state(self, tuned: torch.nn.ModuleList) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        layers = {k: v.detach().clone() for k, v in tuned.state_dict().items()}
        return layers, {k: v.detach().clone() for k, v in self.head.state_dict().items()}

    def _restore(
        self, tuned: torch.nn.ModuleList, state: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]
    ) -> None:
        tuned.load_state_dict(state[0])
        self.head.load_state_dict(state[1])

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

        return np.asarray(torch.sigmoid(torch.from_numpy(self.logits(states))).numpy(), dtype=np.float32)

    def logits(self, states: Sequence[torch.Tensor]) -> npt.NDArray[np.float32]:
        import torch

        out = np.zeros((len(states), len(self.labels)), np.float32)
        order = np.argsort([s.shape[0] for s in states], kind="stable")
        with torch.inference_mode(), self._autocast(), _every_core():
            for start in range(0, len(states), 128):
                idx = order[start : start + 128]
                logits = self.head(self._embed([states[i] for i in idx]) * self.config.logit_scale)
                out[idx] = logits.float().numpy()
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


@dataclass
class _EarlyStopping:
    """Remembers the best epoch by validation loss; says stop after `patience` epochs without a better one."""

    patience: int
    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: Any = None
    epoch: int = 0

    def should_stop(self, loss: float, snapshot: Callable[[], Any]) -> bool:
        """`snapshot` copies the weights; it runs only for a new best epoch."""
        self.epoch += 1
        if loss < self.best_loss:
            self.best_loss, self.best_epoch, self.best_state = loss, self.epoch, snapshot()
        return self.epoch - self.best_epoch >= self.patience


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
