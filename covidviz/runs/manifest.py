"""``manifest.json`` as dataclasses: written with ``to_json()``, read with ``from_json()``.

``ManifestInfo`` is the whole file: identity (status, dates, versions), the ``DatasetCard``, the label
space, the ``SplitCard``, the preprocessing contract, the resolved run configuration, what source
deconfounding did (``Deconfounding``, absent when it was not asked for) and one ``ManifestBackbone`` per
trained backbone (its init, training record and metrics at training time).
``covidviz.pipeline`` builds them and ``ExperimentWriter.write_manifest`` writes them; the app reads
them through ``Experiment.info`` and ``Experiment.record(arch)``.

Reading is tolerant of other versions of the format: a key an older covidviz did not write reads as
the field's default (``None``, an empty list or dict; a backbone's output stride as the one it was
trained at before the option existed), and a key this version does not know (a newer writer's) is
kept in ``extra`` and written back unchanged, so reading then re-writing a manifest loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from covidviz.data.labels import LabelSpace
from covidviz.data.preprocess import Preprocessing


def _d(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def _unknown(cls, d: dict) -> dict:
    """The keys of a JSON object that ``cls`` has no field for (kept in ``extra``, written back as read)."""
    known = {f.name for f in fields(cls)} - {"extra"}
    return {k: v for k, v in d.items() if k not in known}


def _pair(value) -> tuple[int, int] | None:
    return (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) and len(value) == 2 else None


@dataclass
class DatasetCard:
    """What the experiment was trained on: the ``--data`` specs, one dict per source (``kind``, ``root``,
    ``description``, ``n_images``, ``n_skipped``), the images and patients kept, the unreadable images
    skipped (``{"path", "reason"}`` each). ``lung_input`` (lung inputs only, ``train.py --input``): of
    the ``n`` films kept, how many ``fell_back`` to the fixed lung boxes because their segmentation
    could not be trusted, and the first of them (``examples``); empty for the whole-film input."""

    specs: list[str] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)
    n_images: int | None = None
    n_patients: int | None = None
    skipped: list[dict] = field(default_factory=list)
    lung_input: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        return {"specs": list(self.specs), "sources": [dict(s) for s in self.sources], "n_images": self.n_images,
                "n_patients": self.n_patients, "skipped": list(self.skipped),
                **({"lung_input": dict(self.lung_input)} if self.lung_input else {}), **self.extra}

    @classmethod
    def from_json(cls, d) -> DatasetCard:
        d = _d(d)
        return cls(specs=_list(d.get("specs")), sources=[s for s in _list(d.get("sources")) if isinstance(s, dict)],
                   n_images=d.get("n_images"), n_patients=d.get("n_patients"), skipped=_list(d.get("skipped")),
                   lung_input=dict(_d(d.get("lung_input"))), extra=_unknown(cls, d))


@dataclass
class SplitCard:
    """The patient-disjoint split: its seed and fractions, images and patients per split."""

    seed: int | None = None
    fractions: list[float] = field(default_factory=list)
    unit: str = "patient"
    counts: dict[str, int] = field(default_factory=dict)
    patients: dict[str, int] = field(default_factory=dict)
    extra: dict = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        return {"seed": self.seed, "fractions": list(self.fractions), "unit": self.unit, "counts": dict(self.counts),
                "patients": dict(self.patients), **self.extra}

    @classmethod
    def from_json(cls, d) -> SplitCard:
        d = _d(d)
        return cls(seed=d.get("seed"), fractions=_list(d.get("fractions")), unit=d.get("unit") or "patient",
                   counts=dict(_d(d.get("counts"))), patients=dict(_d(d.get("patients"))), extra=_unknown(cls, d))


@dataclass
class Deconfounding:
    """``train.py --deconfound``: the method asked for, its peak strength and objective, whether it ran
    (``active``; ``message`` says why not, e.g. the data has one source), the training films per class
    and source the adversary used (``per_class``) and the smallest count a source needed inside a class.
    Manifests written before the option, or trained without it, have none (``ManifestInfo.deconfound``
    is None)."""

    method: str = "none"
    strength: float | None = None
    active: bool = False
    message: str = ""
    per_class: dict[str, dict[str, int]] = field(default_factory=dict)
    min_films: int | None = None
    schedule: str = ""
    # what the backbone was pushed towards (covidviz.deconfound.OBJECTIVES); manifests from before the
    # choice existed were trained by gradient reversal
    objective: str = "reverse"
    extra: dict = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        return {"method": self.method, "strength": self.strength, "active": self.active, "message": self.message,
                "per_class": {k: dict(v) for k, v in self.per_class.items()}, "min_films": self.min_films,
                "schedule": self.schedule, "objective": self.objective, **self.extra}

    @classmethod
    def from_json(cls, d) -> Deconfounding:
        d = _d(d)
        per_class = {str(k): {str(s): int(n) for s, n in _d(v).items()} for k, v in _d(d.get("per_class")).items()}
        return cls(method=str(d.get("method") or "none"), strength=d.get("strength"), active=bool(d.get("active")),
                   message=str(d.get("message") or ""), per_class=per_class, min_films=d.get("min_films"),
                   schedule=str(d.get("schedule") or ""), objective=str(d.get("objective") or "reverse"),
                   extra=_unknown(cls, d))


def _legacy_stride(arch: str) -> int | None:
    """The output stride of a backbone whose record predates the option (its native stride)."""
    from covidviz.models import legacy_output_stride  # torch-heavy: only old manifests pay for the import

    try:
        return legacy_output_stride(arch)
    except ValueError:  # a backbone this covidviz does not know
        return None


@dataclass
class ManifestBackbone:
    """One backbone's record in ``manifest.json``, written once it is trained: where its weights
    started (``init``: ``source``, ``weights``, perhaps a ``warning``), how it was built (feature size,
    CAM layer, output stride and the CAM grid at the experiment's image size), how training went and
    its metrics at training time (``metrics[split]``: ``auc`` per class, ``macro_auc``, ``n``)."""

    arch: str
    init: dict = field(default_factory=dict)
    feature_dim: int | None = None
    cam_layer: str | None = None
    # Input size / last-feature-map size the backbone was built with; records from before the option
    # existed read as the backbone's native stride (what they were all trained at).
    output_stride: int | None = None
    cam_grid: tuple[int, int] | None = None    # (h, w) cells of the default CAM map; None when not recorded
    epochs_trained: int | None = None
    best_epoch: int | None = None
    best_val_auc: float | None = None
    stopped_early: bool | None = None
    train_seconds: float | None = None
    device: str | None = None
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        """The record as written in the manifest (the arch is its key there, not a field)."""
        return {"init": dict(self.init), "feature_dim": self.feature_dim, "cam_layer": self.cam_layer,
                "output_stride": self.output_stride, "cam_grid": list(self.cam_grid) if self.cam_grid else None,
                "epochs_trained": self.epochs_trained, "best_epoch": self.best_epoch,
                "best_val_auc": self.best_val_auc, "stopped_early": self.stopped_early,
                "train_seconds": self.train_seconds, "device": self.device, "metrics": self.metrics, **self.extra}

    @classmethod
    def from_json(cls, d, arch: str) -> ManifestBackbone:
        d = _d(d)
        stride = d.get("output_stride")
        return cls(arch, init=dict(_d(d.get("init"))), feature_dim=d.get("feature_dim"), cam_layer=d.get("cam_layer"),
                   output_stride=int(stride) if stride else _legacy_stride(arch), cam_grid=_pair(d.get("cam_grid")),
                   epochs_trained=d.get("epochs_trained"), best_epoch=d.get("best_epoch"),
                   best_val_auc=d.get("best_val_auc"), stopped_early=d.get("stopped_early"),
                   train_seconds=d.get("train_seconds"), device=d.get("device"), metrics=_d(d.get("metrics")),
                   extra=_unknown(cls, d))

    def split_metrics(self, split: str = "test") -> dict:
        return _d(self.metrics.get(split))

    def aucs(self, split: str = "test") -> dict[str, float | None]:
        return dict(_d(self.split_metrics(split).get("auc")))

    def macro_auc(self, split: str = "test") -> float | None:
        return self.split_metrics(split).get("macro_auc")

    def n(self, split: str = "test") -> int | None:
        return self.split_metrics(split).get("n")

    def get(self, key: str, default=None):
        """A field by its manifest key, or a key kept from a newer writer; ``default`` when absent or None."""
        value = getattr(self, key, None) if key not in ("arch", "extra") else None
        if value is None:
            value = self.extra.get(key)
        return default if value is None else value


@dataclass
class ManifestInfo:
    """The whole ``manifest.json``: when and with what the experiment was made, the dataset card, the
    label space, the split, the preprocessing contract, the resolved configuration (``config``:
    ``RunConfig.to_json()``, the optimisation settings nested under ``train``) and the backbones."""

    status: str | None = None              # "training" while being built, "complete" once published
    created: str | None = None
    completed: str | None = None
    covidviz_version: str | None = None    # the covidviz that trained it
    torch_version: str | None = None
    dataset: DatasetCard = field(default_factory=DatasetCard)
    labels: LabelSpace | None = None
    split: SplitCard = field(default_factory=SplitCard)
    preprocessing: Preprocessing | None = None
    config: dict = field(default_factory=dict)
    backbones: dict[str, ManifestBackbone] = field(default_factory=dict)
    analysis: dict | None = None           # the analysis step's summary, once analysed
    deconfound: Deconfounding | None = None  # --deconfound's record; None when not asked for (or older)
    # Stamped by ExperimentWriter.write_manifest.
    format: str | None = None
    schema_version: int | None = None
    name: str | None = None
    extra: dict = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        """The manifest as written; parts that are ``None`` (not stamped yet, not analysed) are left out."""
        out = {
            "format": self.format, "schema_version": self.schema_version, "name": self.name, "status": self.status,
            "created": self.created, "completed": self.completed, "covidviz_version": self.covidviz_version,
            "torch_version": self.torch_version, "dataset": self.dataset.to_json(),
            "labels": self.labels.to_json() if self.labels is not None else None, "split": self.split.to_json(),
            "preprocessing": self.preprocessing.to_json() if self.preprocessing is not None else None,
            "config": dict(self.config), "backbones": {a: b.to_json() for a, b in self.backbones.items()},
            "analysis": self.analysis,
            "deconfound": self.deconfound.to_json() if self.deconfound is not None else None,
        }
        return {**{k: v for k, v in out.items() if v is not None}, **self.extra}

    @classmethod
    def from_json(cls, d) -> ManifestInfo:
        """Raises ``ValueError``/``KeyError``/``TypeError`` only for labels or preprocessing that are present
        but invalid (``read_experiment`` checks those first and names the folder)."""
        d = _d(d)
        labels, prep = d.get("labels"), d.get("preprocessing")
        return cls(
            status=d.get("status"), created=d.get("created"), completed=d.get("completed"),
            covidviz_version=d.get("covidviz_version"), torch_version=d.get("torch_version"),
            dataset=DatasetCard.from_json(d.get("dataset")),
            labels=LabelSpace.from_json(labels) if labels is not None else None,
            split=SplitCard.from_json(d.get("split")),
            preprocessing=Preprocessing.from_json(prep) if prep is not None else None,
            config=dict(_d(d.get("config"))),
            backbones={a: ManifestBackbone.from_json(b, a) for a, b in _d(d.get("backbones")).items()},
            analysis=d.get("analysis"),
            deconfound=Deconfounding.from_json(d["deconfound"]) if isinstance(d.get("deconfound"), dict) else None,
            format=d.get("format"), schema_version=d.get("schema_version"),
            name=d.get("name"), extra=_unknown(cls, d))

    @property
    def version(self) -> str | None:
        """The covidviz version that trained the experiment."""
        return self.covidviz_version

    @property
    def settings(self) -> dict:
        """The configuration with the optimisation settings (nested under ``train``) lifted to the top."""
        return {**self.config, **_d(self.config.get("train"))}

    @property
    def data_specs(self) -> list[str]:
        """The ``--data KIND:PATH`` specs the experiment was trained on."""
        return [str(s) for s in (self.dataset.specs or self.config.get("data") or [])]

    @property
    def sources(self) -> list[dict]:
        """One dict per dataset: ``kind``, ``root``, ``description``, ``n_images``, ``n_skipped``."""
        return list(self.dataset.sources)

    @property
    def skipped(self) -> list:
        """Unreadable images, one ``{"path", "reason"}`` each."""
        return list(self.dataset.skipped)
