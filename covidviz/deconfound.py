"""Source deconfounding (``train.py --deconfound source``): an adversary that must not read the hospital.

During training a small head reads the pooled features (the embedding the classifier's linear head,
the latent maps and the source probe read) and predicts each film's source *within its class* (for a
multi-label experiment: within its set of findings), through a gradient-reversal layer (Ganin &
Lempitsky 2015, "DANN"): the adversary learns to tell the hospitals apart, and the reversed gradient
pushes the backbone to make that impossible. Because the adversary is conditioned on the class (one
output row of source logits per class, only the sources that class has in training), what it removes
is what tells the hospitals apart among films of the same disease, not the disease itself, even when
the source and the class go together (covid3: COVID-19 comes from one hospital).

The reversal strength ramps up as in DANN, ``strength * (2 / (1 + exp(-10 p)) - 1)`` with ``p`` the
share of training steps done, so early epochs learn the task before the adversary pushes back. Each
class's films are weighted so that its sources count equally (a 90 %/10 % split would otherwise let the
adversary win by guessing the majority and give the backbone no signal). A source with fewer than
``MIN_FILMS`` training films inside a class is left out of that class; a class left with one source has
no adversary row. The adversary is training-only: the saved model is the same ``Classifier`` as without
it, so inference, CAMs and every page work unchanged.

What the backbone is pushed towards (``--deconfound-objective``, ``OBJECTIVES``):

- ``confusion`` (the default): the backbone is trained to make the adversary's answer *uniform* over the
  class's sources (the domain-confusion loss of Tzeng et al. 2015, used to remove a bias by Alvi et al.
  2018, "Turning a blind eye"), while the adversary trains on detached features. The loss is bounded (its
  least is log of the number of sources) and its optimum is features that do not tell the hospitals apart.
- ``reverse``: DANN's gradient reversal, the backbone maximises the adversary's cross-entropy. That loss
  is unbounded, and a backbone can raise it by making the adversary confidently *wrong*, which keeps the
  hospital in the features (flipped): on covid3 at strength 0.3 the adversary's loss climbed from 0.6 to
  18.7, validation AUC swung between 0.30 and 0.89 and the source probe stayed at 1.00 inside Normal.

``plan_source_adversary`` decides from the training table what the adversary sees (or why it cannot
run); ``SourceAdversary`` is the head, ``WithAdversary`` the one module DDP wraps; ``training.fit``
drives them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from covidviz.data.labels import MULTICLASS, LabelSpace, split_labels

METHODS = ("none", "source")
OBJECTIVES = ("confusion", "reverse")  # what the backbone is pushed towards (module docstring); first = default
MIN_FILMS = 5        # training films of a source inside a class for the adversary to use that source there
HIDDEN = 128         # the adversary's hidden layer (DANN's domain classifier is a small MLP)
# The adversary's peak learning rate over the backbone's: a fresh head chasing features that move must
# learn faster than they change (DANN trains its new layers at 10x); with the same rate, on phantoms it
# stayed at chance for all of a 6-epoch run while a probe on the same features told the sources apart.
LR_SCALE = 10.0
_NONE = "no finding"   # the stratum of a multi-label film without a finding


class _Reverse(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``-lambd`` backward."""

    @staticmethod
    def forward(ctx, x, lambd: float):
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lambd * grad, None


def reverse_gradient(x: torch.Tensor, lambd: float) -> torch.Tensor:
    """``x`` unchanged; what flows back through it is reversed and scaled by ``lambd``."""
    return _Reverse.apply(x, float(lambd))


def dann_lambda(progress: float, strength: float) -> float:
    """DANN's ramp: 0 at the start of training, ``strength`` (0.76 of it at a quarter of the way, 0.99
    at half way) towards the end; ``progress`` is the share of training steps done."""
    p = min(max(float(progress), 0.0), 1.0)
    return float(strength) * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)


RAMPED = 0.9  # the share of its strength the reversal must reach before an epoch may be kept as the best


def ramped_up(lambd: float, strength: float) -> bool:
    """Whether the reversal (``lambd``) has reached ``RAMPED`` of its peak ``strength`` (DANN's ramp gets there
    at 29 % of the training steps): only then is the model one the adversary has acted on."""
    return float(lambd) >= RAMPED * float(strength)


def strata_of(label_cells, labels: LabelSpace) -> list[str]:
    """The group inside which the source is predicted: the class (multi-class) or the set of findings
    (multi-label, "no finding" for none)."""
    out = []
    for cell in label_cells:
        found = [lab for lab in split_labels(cell) if lab in labels.names]
        if labels.task == MULTICLASS:
            out.append(found[0] if found else "")
        else:
            out.append("|".join(sorted(found)) or _NONE)
    return out


@dataclass(frozen=True)
class AdversaryPlan:
    """What the adversary sees, row-aligned with the training rows: ``stratum`` (index into ``strata``,
    -1 = the film takes no part), ``source`` (index into ``sources``) and ``weight`` (each class's
    sources count equally; 0 for films taking no part); ``allowed[c, s]``: source ``s`` is one the
    adversary chooses from inside stratum ``c``; ``counts``: the training films per class and source used."""

    strata: list[str]
    sources: list[str]
    allowed: np.ndarray
    stratum: np.ndarray
    source: np.ndarray
    weight: np.ndarray
    counts: dict[str, dict[str, int]]


def _describe(counts: dict[str, dict[str, int]]) -> str:
    return "; ".join(f"{k}: " + ", ".join(f"{s} {n}" for s, n in v.items()) for k, v in counts.items())


def plan_source_adversary(strata: list[str], sources: list[str],
                          min_films: int = MIN_FILMS) -> tuple[AdversaryPlan | None, str]:
    """The adversary's targets for the training films (their stratum and source), or None and the
    reason it cannot run (one source in the data; or no class with two sources of ``min_films`` films)."""
    strata = [str(s) for s in strata]
    src = [str(s) for s in sources]
    if len(strata) != len(src):
        raise ValueError(f"{len(strata)} strata for {len(src)} sources")
    known = sorted({s for s in src if s})
    if len(known) < 2:
        what = f"one source ({known[0]})" if known else "no source column"
        return None, f"the training data has {what}, so there is no hospital to deconfound"
    table: dict[str, dict[str, int]] = {}
    for k, s in zip(strata, src):
        if k and s:
            table.setdefault(k, {}).setdefault(s, 0)
            table[k][s] += 1
    used = {k: {s: n for s, n in sorted(v.items()) if n >= min_films} for k, v in sorted(table.items())}
    used = {k: v for k, v in used.items() if len(v) >= 2}
    if not used:
        return None, ("no class has two sources with at least "
                      f"{min_films} training films each ({_describe({k: dict(sorted(v.items())) for k, v in table.items()})})")
    names = sorted(used)
    srcs = sorted({s for v in used.values() for s in v})
    allowed = np.zeros((len(names), len(srcs)), bool)
    for i, k in enumerate(names):
        for s in used[k]:
            allowed[i, srcs.index(s)] = True
    n = len(strata)
    stratum, source, weight = np.full(n, -1, np.int64), np.zeros(n, np.int64), np.zeros(n, np.float32)
    for r, (k, s) in enumerate(zip(strata, src)):
        if k in used and s in used[k]:
            stratum[r], source[r] = names.index(k), srcs.index(s)
            total = sum(used[k].values())
            weight[r] = total / (len(used[k]) * used[k][s])  # each source of the class weighs the same
    return AdversaryPlan(names, srcs, allowed, stratum, source, weight, used), ""


class SourceAdversary(nn.Module):
    """A small MLP from the pooled features (standardised per feature by a parameter-free batch norm, as
    the probe standardises them) to one row of source logits per stratum; ``lambd`` is the current
    reversal strength (set by the training loop every step)."""

    def __init__(self, feature_dim: int, allowed: np.ndarray, hidden: int = HIDDEN):
        super().__init__()
        allowed = np.asarray(allowed, bool)
        self.n_strata, self.n_sources = allowed.shape
        self.register_buffer("allowed", torch.as_tensor(allowed))
        self.norm = nn.BatchNorm1d(feature_dim, affine=False)
        self.net = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, allowed.size))
        self.lambd = 0.0

    def forward(self, features: torch.Tensor, stratum: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """(N, S) source logits of each film's own stratum, sources it lacks masked out. ``frozen``: the
        adversary as a fixed judge (no gradient reaches its parameters, its running statistics are not
        updated), for the backbone's confusion loss; otherwise ``features`` should arrive detached
        (confusion) or through ``reverse_gradient`` (reverse)."""
        f = features.float()
        if frozen:  # the same layers with detached parameters: only the features get a gradient
            f = F.batch_norm(f, None, None, training=True, eps=self.norm.eps) if self.training and len(f) > 1 \
                else F.batch_norm(f, self.norm.running_mean, self.norm.running_var, training=False, eps=self.norm.eps)
            first, last = self.net[0], self.net[2]
            h = F.relu(F.linear(f, first.weight.detach(), first.bias.detach()))
            logits = F.linear(h, last.weight.detach(), last.bias.detach())
        else:
            # A batch of one film has no batch statistics: standardise it with the running ones.
            f = self.norm(f) if not self.training or len(f) > 1 else F.batch_norm(
                f, self.norm.running_mean, self.norm.running_var, training=False, eps=self.norm.eps)
            logits = self.net(f)
        logits = logits.view(-1, self.n_strata, self.n_sources)
        k = stratum.clamp(min=0)
        rows = logits[torch.arange(len(k), device=logits.device), k]
        return rows.masked_fill(~self.allowed[k], -1e4)

    @staticmethod
    def loss(logits: torch.Tensor, source: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        """(weighted cross-entropy, weighted number of correct calls, total weight) over the batch."""
        ce = F.cross_entropy(logits.float(), source, reduction="none")
        total = weight.sum()
        loss = (ce * weight).sum() / total.clamp(min=1e-8)
        correct = float(((logits.argmax(1) == source).float() * weight).sum())
        return loss, correct, float(total)

    @staticmethod
    def confusion(logits: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The backbone's confusion loss: weighted cross-entropy between the adversary's answer and the
        uniform distribution over each film's allowed sources (masked logits are at -1e4); least, log of
        the number of sources, when the adversary cannot tell them apart."""
        logp = logits.float().log_softmax(1)
        allowed = (logits > -1e3).float()
        ce = -(logp * allowed).sum(1) / allowed.sum(1).clamp(min=1)
        return (ce * weight).sum() / weight.sum().clamp(min=1e-8)


class WithAdversary(nn.Module):
    """The classifier and its adversary as one module (what DistributedDataParallel wraps):
    ``forward(x, stratum)`` -> (class logits, the source logits the adversary learns from, the source
    logits the backbone is judged by: None for ``reverse``, whose reversed gradient does both jobs)."""

    def __init__(self, model: nn.Module, adversary: SourceAdversary, objective: str = OBJECTIVES[0]):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"deconfounding objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
        self.model, self.adversary, self.objective = model, adversary, objective

    def forward(self, x: torch.Tensor, stratum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        f = self.model.forward_features(x)
        if self.objective == "reverse":
            return self.model.head(f), self.adversary(reverse_gradient(f, self.adversary.lambd), stratum), None
        return self.model.head(f), self.adversary(f.detach(), stratum), self.adversary(f, stratum, frozen=True)
