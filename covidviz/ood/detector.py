"""One out-of-distribution verdict per image, from the input gate and every backbone's features.

Fitting (``fit_ood``, run by the analysis step and stored as ``ood.npz`` + ``ood.json``):

1. per backbone, on the TRAINING images' pooled features only: standardise, PCA to at most 50
   dimensions (``covidviz.stats.projection.fit_reducer``, the same reducer the maps use, but fitted
   on the training rows so validation and test images are unseen by the detector), then three scores,
   each "higher = less like the training images":

   - ``mahalanobis``: the Mahalanobis distance to the training mean in the PCA space, with a
     Ledoit-Wolf shrunk covariance (``sklearn.covariance.LedoitWolf``; a plain covariance of 50
     dimensions from a few hundred images is too noisy to invert);
   - ``knn``: the distance to the k-th (k = 5) nearest training image in the same space
     (``sklearn.neighbors.NearestNeighbors``; at most 20,000 seeded training rows are kept);
   - ``energy``: minus the log-sum-exp of the logits (Liu et al. 2020; for multi-label heads minus the
     sum of softplus(logit)). The run stores probabilities, not logits, and a softmax loses the
     logits' common offset, which is exactly what the energy measures; but the head is linear, so the
     logits are recomputed exactly from the stored features and the head's weights in ``weights.pt``;

2. each backbone's score is put on a common scale by the training images' own scores (median and
   inter-quartile range; k-NN leaves each image out of its own neighbours), and the backbones are
   combined into ONE score per image: the mean of their standardised scores;

3. the cut-off is chosen on the VALIDATION images (never used to fit anything above) for a stated
   false-alarm rate ``alpha`` (default 5 %): the ceil((n+1)(1-alpha))-th smallest validation score,
   the split-conformal quantile, so a new image from the training distribution is flagged with
   probability at most ``alpha`` (Vovk et al. 2005; Angelopoulos & Bates 2021). With fewer than
   1/alpha - 1 validation images no such quantile exists and the largest validation score is used.

The verdict (``OodDetector.verdict``): OOD when the gate fails (``covidviz.ood.gate``) or the combined
score of the chosen detector exceeds the cut-off. ``bench/ood.py`` compares the three detectors and
the verdict uses ``mahalanobis``: both distances rank almost perfectly where the shift is large (real
films under a phantom-trained model: AUROC 0.998-1.000 for both), but at the 5 % cut-off Mahalanobis
flagged 97-100 % of those films in two trainings where k-NN flagged 68-100 % (its cut-off sits on the
few validation images farthest from their neighbours); both flag every screenshot, document and CT
slice; k-NN was a little better on grayscale photos (30 % vs 22 % flagged, both poor). The energy
score is near chance on every shift for these models trained from scratch (AUROC 0.50-0.79) and is
kept for comparison only.

An experiment analysed before this module existed has no ``ood.npz``: ``OodDetector.from_experiment``
then returns a detector whose ``available`` is False, and its verdicts are the gate's alone with
``checked`` False ("no verdict" from the features), never an exception. ``covidviz.ood.load_detector``
gives such an experiment its older rule instead (``covidviz.ood.legacy``), behind the same interface
(``covidviz.ood.verdict.Detector``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from covidviz import runs
from covidviz.data.labels import MULTICLASS
from covidviz.ood.verdict import Detector, FeatureCheck
from covidviz.runs.records import OodInfo
from covidviz.stats.projection import apply_reducer, fit_reducer

log = logging.getLogger(__name__)

OOD_VERSION = 1
DETECTORS = ("mahalanobis", "knn", "energy")
DEFAULT_DETECTOR = "mahalanobis"  # chosen by bench/ood.py: see the module docstring
FALSE_ALARM_RATE = 0.05
PCA_DIM = 50
KNN_K = 5
MAX_REFERENCE = 20_000   # training rows kept for k-NN (seeded sample above this)
NORM_SAMPLE = 2_000      # training rows scored to standardise each backbone's scores
REDUCER_KEYS = ("mean", "scale", "pca_mean", "components")
COMBINE = "mean over backbones of (score - training median) / training IQR"


# ---------------------------------------------------------------- one backbone's scores

@dataclass
class BackboneScorer:
    """The three scores of one backbone, from plain arrays (see the module docstring)."""

    reducer: dict                  # standardiser + PCA fitted on the training features
    ref: np.ndarray                # (R, k) training rows in the PCA space (k-NN reference)
    location: np.ndarray           # (k,) Ledoit-Wolf mean
    precision: np.ndarray          # (k, k) Ledoit-Wolf precision
    head_weight: np.ndarray        # (C, D) linear head, for the logits (energy)
    head_bias: np.ndarray          # (C,)
    task: str = MULTICLASS
    knn_k: int = KNN_K
    _nn: object = field(default=None, repr=False)

    def __post_init__(self):
        from sklearn.neighbors import NearestNeighbors

        # Built once here, so a scorer is read-only afterwards (one detector serves many threads).
        self._nn = NearestNeighbors(n_neighbors=min(self.knn_k + 1, len(self.ref)), algorithm="brute").fit(self.ref)

    @classmethod
    def fit(cls, train_features: np.ndarray, head_weight, head_bias, task: str, seed: int = 0,
            knn_k: int = KNN_K, max_reference: int = MAX_REFERENCE) -> BackboneScorer:
        from sklearn.covariance import LedoitWolf

        X = np.asarray(train_features, np.float32)
        if len(X) < 3:
            raise ValueError(f"need at least 3 training images to fit an OOD detector, got {len(X)}")
        Z, reducer = fit_reducer(X, min(PCA_DIM, len(X) - 1), seed)
        lw = LedoitWolf(store_precision=True).fit(Z.astype(np.float64))
        ref = Z
        if len(Z) > max_reference:
            ref = Z[np.sort(np.random.default_rng(seed).choice(len(Z), max_reference, replace=False))]
        return cls({k: reducer[k] for k in REDUCER_KEYS}, np.ascontiguousarray(ref, np.float32),
                   lw.location_.astype(np.float32), lw.precision_.astype(np.float32),
                   np.asarray(head_weight, np.float32), np.asarray(head_bias, np.float32), task,
                   int(min(knn_k, max(1, len(ref) - 1))))

    @property
    def dim(self) -> int:
        return int(self.reducer["mean"].shape[0])

    def scores(self, features: np.ndarray, leave_one_out: bool = False) -> dict[str, np.ndarray]:
        """(M, D) raw pooled features -> {detector: (M,) float64}. ``leave_one_out``: the features
        are reference rows themselves (k-NN skips each one's own, nearest, entry)."""
        X = np.asarray(features, np.float32)
        if X.ndim == 1:
            X = X[None]
        Z = apply_reducer(X, self.reducer).astype(np.float64)
        d = Z - self.location
        maha = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, self.precision.astype(np.float64), d), 0.0))
        k = self.knn_k + (1 if leave_one_out else 0)
        dist, _ = self._nn.kneighbors(Z.astype(np.float32), n_neighbors=min(k, len(self.ref)))
        knn = dist[:, -1].astype(np.float64)
        logits = X.astype(np.float64) @ self.head_weight.T.astype(np.float64) + self.head_bias
        if self.task == MULTICLASS:
            top = logits.max(axis=1, keepdims=True)
            energy = -(top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))
        else:
            energy = -np.logaddexp(0.0, logits).sum(axis=1)
        return {"mahalanobis": maha, "knn": knn, "energy": energy}

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}reducer_{k}": np.asarray(v, np.float32) for k, v in self.reducer.items()}
        out.update({f"{prefix}ref": self.ref, f"{prefix}location": self.location, f"{prefix}precision": self.precision,
                    f"{prefix}head_weight": self.head_weight, f"{prefix}head_bias": self.head_bias,
                    f"{prefix}knn_k": np.array(self.knn_k, np.int64), f"{prefix}task": np.array(self.task)})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict, prefix: str) -> BackboneScorer:
        return cls({k: np.asarray(arrays[f"{prefix}reducer_{k}"], np.float32) for k in REDUCER_KEYS},
                   np.asarray(arrays[f"{prefix}ref"], np.float32), np.asarray(arrays[f"{prefix}location"], np.float32),
                   np.asarray(arrays[f"{prefix}precision"], np.float32),
                   np.asarray(arrays[f"{prefix}head_weight"], np.float32),
                   np.asarray(arrays[f"{prefix}head_bias"], np.float32), str(np.asarray(arrays[f"{prefix}task"])),
                   int(np.asarray(arrays[f"{prefix}knn_k"])))


# ---------------------------------------------------------------- cut-off

def conformal_cutoff(calibration_scores: np.ndarray, alpha: float) -> float:
    """The ceil((n+1)(1-alpha))-th smallest score (the largest when n is too small for alpha):
    a new in-distribution score exceeds it with probability at most ``alpha``."""
    s = np.sort(np.asarray(calibration_scores, np.float64))
    s = s[np.isfinite(s)]
    if len(s) == 0:
        return math.inf
    rank = math.ceil((len(s) + 1) * (1.0 - alpha))
    return float(s[min(rank, len(s)) - 1])


def _robust_norm(scores: np.ndarray) -> tuple[float, float]:
    q25, q50, q75 = np.percentile(scores, [25, 50, 75])
    scale = float(q75 - q25)
    if not np.isfinite(scale) or scale <= 1e-12:
        scale = float(np.std(scores)) or 1.0
    return float(q50), scale


# ---------------------------------------------------------------- the fitted detector

NOT_FITTED = ("No feature-space check: this experiment was analysed before out-of-distribution detection "
              "existed (run `python train.py analyze {path}` to add it); only the input gate was applied.")


class OodDetector(Detector):
    """The fitted detector of one experiment: per-backbone scorers, their standardisation, the
    validation scores and the chosen cut-off. ``from_experiment`` reads it; ``verdict`` (``Detector``'s)
    judges one image. Read-only after construction, so one instance may serve many threads."""

    def __init__(self, scorers: dict[str, BackboneScorer], norms: dict[str, dict[str, tuple[float, float]]],
                 val_z: dict[str, np.ndarray], detector: str = DEFAULT_DETECTOR, alpha: float = FALSE_ALARM_RATE,
                 info: OodInfo | None = None, path: str = ""):
        self.scorers = scorers
        self.archs = list(scorers)
        self.norms = norms              # detector -> arch -> (median, iqr) of the training scores
        self.val_z = val_z              # detector -> (n_val, n_archs) standardised validation scores
        self.detector = detector
        self.alpha = float(alpha)
        self.info = info
        self.path = path

    @property
    def available(self) -> bool:
        return bool(self.scorers)

    @classmethod
    def unavailable(cls, path: str = "") -> OodDetector:
        return cls({}, {}, {}, path=path)

    @classmethod
    def from_experiment(cls, exp: runs.Experiment) -> OodDetector:
        """The stored detector, or an unavailable one (experiment not analysed with OOD detection).
        Raises ``runs.RunFormatError`` only for a present but unreadable file."""
        if not (exp.has_artifact(runs.OOD) and exp.has_artifact(runs.OOD_INFO)):
            return cls.unavailable(str(exp.path))
        return cls.from_arrays(exp.load_arrays(runs.OOD), OodInfo(exp.load_json(runs.OOD_INFO)), str(exp.path))

    @classmethod
    def from_arrays(cls, arrays: dict, info: OodInfo, path: str = "") -> OodDetector:
        archs = info.archs
        scorers = {a: BackboneScorer.from_arrays(arrays, f"{a}__") for a in archs}
        norms = {d: {a: tuple(float(v) for v in arrays[f"{a}__norm_{d}"]) for a in archs} for d in info.detectors}
        val_z = {d: np.asarray(arrays[f"val_z_{d}"], np.float64) for d in info.detectors}
        return cls(scorers, norms, val_z, info.detector or DEFAULT_DETECTOR, info.false_alarm_rate or FALSE_ALARM_RATE,
                   info, path)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for a, sc in self.scorers.items():
            out.update(sc.to_arrays(f"{a}__"))
            for d in self.norms:
                out[f"{a}__norm_{d}"] = np.array(self.norms[d][a], np.float64)
        out.update({f"val_z_{d}": z for d, z in self.val_z.items()})
        return out

    # -- scores

    def backbone_scores(self, features: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """arch -> detector -> (M,) standardised scores, for the backbones given in ``features``."""
        out = {}
        for arch, f in features.items():
            sc = self.scorers.get(arch)
            if sc is None or f is None:
                continue
            raw = sc.scores(f)
            out[arch] = {d: (raw[d] - self.norms[d][arch][0]) / self.norms[d][arch][1] for d in self.norms}
        return out

    def combined(self, features: dict[str, np.ndarray], detector: str | None = None) -> np.ndarray:
        """(M,) combined score of ``detector`` (default: the chosen one) over the given backbones."""
        detector = detector or self.detector
        per = self.backbone_scores(features)
        if not per:
            raise ValueError(f"no features for any backbone of the detector ({', '.join(self.archs)})")
        return np.mean([per[a][detector] for a in per], axis=0)

    def _val_combined(self, detector: str, archs) -> np.ndarray:
        cols = [self.archs.index(a) for a in archs]
        return self.val_z[detector][:, cols].mean(axis=1)

    def cutoff(self, detector: str | None = None, archs=None) -> float:
        """The score above which an image is OOD, for these backbones (default: all of them)."""
        detector = detector or self.detector
        return conformal_cutoff(self._val_combined(detector, archs or self.archs), self.alpha)

    def percentile(self, score: float, detector: str | None = None, archs=None) -> float:
        """Share (%) of validation images whose combined score is below ``score``."""
        val = np.sort(self._val_combined(detector or self.detector, archs or self.archs))
        return float(100.0 * np.searchsorted(val, score, side="left") / max(len(val), 1))

    # -- the verdict (gate + this check: ``Detector.verdict``)

    def check(self, features: dict[str, np.ndarray]) -> FeatureCheck | str:
        """The feature-space part of a verdict: the combined score of the chosen detector over the
        backbones given (arch -> (D,) features) against the cut-off for those backbones."""
        given = {a: np.asarray(f, np.float32).reshape(1, -1) for a, f in features.items() if a in self.scorers}
        if not self.available:
            return NOT_FITTED.format(path=self.path or "runs/EXP")
        if not given:
            return ("No feature-space check: no features were given for the experiment's backbones "
                    f"({', '.join(self.archs)}); only the input gate was applied.")
        archs = [a for a in self.archs if a in given]
        per = self.backbone_scores(given)
        score = float(np.mean([per[a][self.detector][0] for a in archs]))
        cut = self.cutoff(self.detector, archs)
        pct = self.percentile(score, self.detector, archs)
        reasons = []
        if score > cut:
            worst = max(archs, key=lambda a: per[a][self.detector][0])
            # "farther than 100 % of the validation images" reads oddly: say "every" at the top.
            than = "every validation image" if pct >= 99.5 else f"{pct:.0f} % of the validation images"
            reasons.append(
                f"To the models it looks unlike the training images: in their feature space it lies farther from "
                f"them than {than} (the farthest {100 * self.alpha:.0f} % are flagged), most of all for {worst}.")
        if len(archs) < len(self.archs):
            log.info("OOD verdict without %s (no features given)", ", ".join(a for a in self.archs if a not in archs))
        return FeatureCheck(is_ood=score > cut, reasons=reasons, false_alarm_rate=self.alpha, detector=self.detector,
                            score=score, percentile=pct, cutoff=cut,
                            per_backbone={a: float(per[a][self.detector][0]) for a in archs})


# ---------------------------------------------------------------- fitting from an experiment

def _head(exp: runs.Experiment, arch: str) -> tuple[np.ndarray, np.ndarray]:
    state = exp.load_state_dict(arch)
    return state["head.weight"].float().numpy(), state["head.bias"].float().numpy()


def fit_ood(exp: runs.Experiment, *, seed: int = 0, alpha: float = FALSE_ALARM_RATE,
            detector: str = DEFAULT_DETECTOR) -> tuple[OodDetector, dict]:
    """Fit the detector of ``exp`` (see the module docstring); returns it and the ``ood.json`` record."""
    if detector not in DETECTORS:
        raise ValueError(f"unknown OOD detector {detector!r}; choose from {', '.join(DETECTORS)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"false-alarm rate must be in (0, 1), got {alpha}")
    split = exp.images()["split"].to_numpy()
    train, val, test = (np.flatnonzero(split == s) for s in ("train", "val", "test"))
    if len(train) < 3 or len(val) == 0:
        raise ValueError(f"an OOD detector needs training and validation images ({len(train)} train, {len(val)} val)")
    task = exp.labels.task
    rng = np.random.default_rng(seed)
    norm_rows = np.sort(rng.choice(train, size=min(len(train), NORM_SAMPLE), replace=False))
    scorers, norms, val_z, test_z = {}, {d: {} for d in DETECTORS}, {d: [] for d in DETECTORS}, {d: [] for d in DETECTORS}
    per_arch = {}
    for arch in exp.backbones:
        feats = np.asarray(exp.features(arch), np.float32)
        sc = BackboneScorer.fit(feats[train], *_head(exp, arch), task, seed=seed)
        # The k-NN reference is (a sample of) the training rows: leave each one out of its own neighbours.
        own = sc.scores(feats[norm_rows], leave_one_out=True)
        val_raw, test_raw = sc.scores(feats[val]), sc.scores(feats[test]) if len(test) else None
        for d in DETECTORS:
            norms[d][arch] = _robust_norm(own[d])
            m, s = norms[d][arch]
            val_z[d].append((val_raw[d] - m) / s)
            if test_raw is not None:
                test_z[d].append((test_raw[d] - m) / s)
        scorers[arch] = sc
        per_arch[arch] = {"dim": sc.dim, "pca_dim": int(sc.reducer["components"].shape[0]), "reference": len(sc.ref)}
    val_z = {d: np.column_stack(v) for d, v in val_z.items()}
    det = OodDetector(scorers, norms, val_z, detector, alpha, path=str(exp.path))
    record = {
        "version": OOD_VERSION, "detector": detector, "detectors": list(DETECTORS), "false_alarm_rate": alpha,
        "archs": list(scorers), "combine": COMBINE, "knn_k": KNN_K, "pca_dim": PCA_DIM, "seed": seed,
        "n_train": int(len(train)), "n_val": int(len(val)), "n_test": int(len(test)),
        "backbones": per_arch, "detectors_detail": {}}
    for d in DETECTORS:
        cut = det.cutoff(d)
        val_comb = val_z[d].mean(axis=1)
        rec = {"cutoff": cut, "val_false_alarm": float((val_comb > cut).mean()),
               "conformal": math.ceil((len(val) + 1) * (1 - alpha)) <= len(val)}
        if len(test):
            rec["test_false_alarm"] = float((np.column_stack(test_z[d]).mean(axis=1) > cut).mean())
        record["detectors_detail"][d] = rec
    if not record["detectors_detail"][detector]["conformal"]:
        log.warning("only %d validation images: too few for a %.0f %% false-alarm cut-off; the largest validation "
                    "score is the cut-off", len(val), 100 * alpha)
    det.info = OodInfo(record)
    return det, record


def analyse_ood(exp: runs.Experiment, *, seed: int = 0, alpha: float = FALSE_ALARM_RATE) -> dict:
    """Fit and store the detector of ``exp`` (``ood.npz`` + ``ood.json``, atomic); returns the record."""
    det, record = fit_ood(exp, seed=seed, alpha=alpha)
    exp.save_arrays(runs.OOD, det.to_arrays())
    exp.save_json(runs.OOD_INFO, record)
    return record
