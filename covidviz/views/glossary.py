"""Plain-language glossary of every statistic and map the app shows, and links into it.

One entry per term: what it is and how to read it, in one or two sentences each, for a clinician or
educator who has not met the term. Pages link a term with ``link("Youden's J")``, which points at
the Glossary page's anchor for it (``/glossary#youdens-j``: the id of the term's heading there), so a caption
can explain itself. The page opens with a contents list (``contents_markdown``) of every group and term.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PAGE_URL = "glossary"   # the Glossary page's url_path (app.py)
CONTENTS_ANCHOR = "contents"    # the page title's anchor, above the contents list
BACK_TO_CONTENTS = f"[↑ Back to the contents](#{CONTENTS_ANCHOR})"


@dataclass(frozen=True)
class Entry:
    term: str
    group: str
    what: str
    read: str           # how to read it


_ENTRIES = [
    # ------------------------------------------------------------ discrimination
    Entry("AUC", "Discrimination",
          "Area under the ROC curve: the chance that the model scores a random image with the finding higher "
          "than a random image without it.",
          "0.5 is a coin toss, 1.0 is perfect; above 0.9 is strong, but check the confidence interval and the "
          "thumbnail baseline before believing it."),
    Entry("ROC curve", "Discrimination",
          "Sensitivity plotted against 1 − specificity as the decision threshold sweeps from high to low.",
          "A curve hugging the top-left corner separates the classes well; the diagonal is chance."),
    Entry("Precision-recall curve", "Discrimination",
          "Precision (PPV) plotted against recall (sensitivity) as the threshold sweeps; its area is the "
          "average precision (AP).",
          "More telling than ROC for rare findings: a flat curve near the prevalence means the model adds little."),
    Entry("Macro average", "Discrimination",
          "The plain mean of a metric over the classes, each class counting the same however many images it has.",
          "A high macro AUC can hide one weak class: look at the per-class rows too."),
    Entry("95% CI", "Discrimination",
          "The 95 % confidence interval, from resampling the test PATIENTS 1000 times (a patient bootstrap), so "
          "several films of one patient count once.",
          "A wide interval means few test images: two models whose intervals overlap widely may not differ."),
    Entry("DeLong test", "Discrimination",
          "A test of whether two models' AUCs on the same test images differ more than chance allows.",
          "p < 0.05 suggests a real difference; with many classes read the Holm-corrected p."),
    Entry("Holm correction", "Discrimination",
          "An adjustment of p-values when many classes are tested at once, so that one lucky class is not "
          "mistaken for a real difference.",
          "Use the Holm p (it is never smaller than the raw p) to claim a difference."),
    Entry("Thumbnail baseline", "Discrimination",
          "A logistic regression on 32×32-pixel thumbnails: a deliberately simple model that cannot see disease "
          "detail, only global brightness, shape and text markers.",
          "If it scores close to the CNNs, the task can be solved by a shortcut (hospital, scanner, patient age)."),
    # ------------------------------------------------------------ operating points
    Entry("Sensitivity", "Operating points",
          "Of the images WITH the finding, the share the model calls positive (true-positive rate, recall).",
          "High sensitivity makes a negative call reassuring (rule-out)."),
    Entry("Specificity", "Operating points",
          "Of the images WITHOUT the finding, the share the model calls negative (true-negative rate).",
          "High specificity makes a positive call convincing (rule-in)."),
    Entry("PPV", "Operating points",
          "Positive predictive value: of the images called positive, the share that truly have the finding.",
          "Depends on prevalence: the same model has a much lower PPV where the finding is rare."),
    Entry("NPV", "Operating points",
          "Negative predictive value: of the images called negative, the share that truly lack the finding.",
          "Depends on prevalence: high where the finding is rare, lower where it is common."),
    Entry("Prevalence", "Operating points",
          "The share of patients in a population who have the finding.",
          "Set it to your setting's prevalence to see the PPV and NPV you would get there, not on this test set."),
    Entry("Youden's J", "Operating points",
          "Sensitivity + specificity − 1; the \"balanced\" threshold is the one that maximises it on the "
          "validation images.",
          "A middle-of-the-road cut-off; the rule-out and rule-in points trade one rate for the other."),
    Entry("Operating point", "Operating points",
          "A threshold on the model's probability, chosen on validation images: balanced (Youden's J), rule-out "
          "(sensitivity ≥ 95 %) or rule-in (specificity ≥ 95 %).",
          "The rates shown beside it were measured on the separate test images, with their intervals."),
    Entry("Call reliability", "Operating points",
          "How a screening call reads given what the model knows: Positive or Negative only when the calibrated "
          "probability lies outside a small band around the class's threshold (its width is stated beside the calls) "
          "and the class's test AUC interval lies above 0.5; \"indeterminate\" inside that band; \"not reliable\" "
          "when that interval includes 0.5 or lies below it.",
          "An indeterminate call flips with a tiny change in the film; a not-reliable one comes from a model that "
          "did not tell this class from the rest better than chance on the test images."),
    # ------------------------------------------------------------ calibration
    Entry("Calibration", "Calibration",
          "Whether the probabilities mean what they say: of all images given 0.8, about 80 % should have the finding.",
          "A well-discriminating model can still be badly calibrated; the app shows temperature-scaled probabilities."),
    Entry("Temperature scaling", "Calibration",
          "One number fitted on validation images that softens or sharpens all probabilities without changing "
          "their order (so the AUC is unchanged).",
          "A temperature above 1 means the raw model was over-confident."),
    Entry("ECE", "Calibration",
          "Expected calibration error: the average gap between predicted probability and observed frequency, "
          "over 15 bins of confidence.",
          "0 is perfect; 0.05 means probabilities are off by about 5 points on average."),
    Entry("Brier score", "Calibration",
          "The mean squared difference between the predicted probability and the outcome (0 or 1).",
          "Lower is better; it rewards both calibration and discrimination."),
    Entry("Reliability diagram", "Calibration",
          "Observed frequency plotted against mean predicted probability, per confidence bin.",
          "Points on the diagonal are calibrated; below it the model is over-confident."),
    # ------------------------------------------------------------ shortcuts and subgroups
    Entry("Subgroup AUC", "Shortcuts",
          "The AUC computed within one group only (one source hospital, one sex, one age band, one view).",
          "A high overall AUC with near-chance AUCs inside each source means the model mostly recognises the source."),
    Entry("Cramér's V", "Shortcuts",
          "A 0–1 measure of how strongly a metadata column (e.g. the source hospital) goes with a class.",
          "Above 0.5 the column alone nearly predicts the class: a model may learn the hospital, not the disease."),
    Entry("Out-of-distribution", "Shortcuts",
          "An image unlike the training images (another modality, a photo, a lateral view, another hospital's "
          "films), judged from the image itself and from the models' features.",
          "Predictions on such images are unreliable; the app withholds them unless you ask to see them anyway."),
    # ------------------------------------------------------------ heatmaps
    Entry("CAM", "Heatmaps",
          "Class activation map: where, in the last feature map, the evidence for a class lies; exact for these "
          "models (pooled features and a linear head).",
          "Warm regions raised the class's score. The map's grid (e.g. 8×8 cells) is its true resolution."),
    Entry("Grad-CAM", "Heatmaps",
          "A CAM computed from gradients; on these models' last layer it equals CAM, on an earlier layer it gives "
          "a finer map.",
          "Read it like CAM; it is offered only where it differs from CAM."),
    Entry("Grad-CAM++", "Heatmaps",
          "A Grad-CAM variant that weights each feature by higher-order gradients, meant to cover several "
          "instances of a finding.",
          "Often spreads over more of the lesion than Grad-CAM."),
    Entry("LayerCAM", "Heatmaps",
          "A CAM that keeps only positive gradients per location; suited to earlier, finer layers.",
          "Sharper maps at the cost of more noise."),
    Entry("Eigen-CAM", "Heatmaps",
          "The first principal component of the feature map: where the features are strongest, for any class.",
          "Class-agnostic: the same map whichever class you explain."),
    Entry("Pointing game", "Heatmaps",
          "The share of images whose heatmap peak falls inside the known lesion (a phantom's mask or an expert box).",
          "Compare it with the random map's rate beside it: only a clear gap means the map localises."),
    Entry("Energy inside", "Heatmaps",
          "The share of a heatmap's total heat that lies inside the lesion.",
          "Unlike the pointing game, it notices a second, wrong hot spot."),
    Entry("Lung-weight share", "Heatmaps",
          "The share of a heat map's total weight that lies inside the lung fields, which a small segmentation "
          "network finds on the film; chance is the lungs' own share of the film (what an evenly spread map scores).",
          "Well above the lungs' share: the model looks at the lungs. Mostly outside (the film's edge, below the "
          "diaphragm, text markers): its score may rest on a shortcut, not on the lungs."),
    Entry("Occlusion what-if", "Heatmaps",
          "Part of the image is hidden (filled with the film's own blurred background) and the model scores the "
          "altered copy: the change says what the score depends on, which a heat map cannot.",
          "A drop with the hottest region hidden, larger than with the same area hidden at random, means the map "
          "points at what the model uses; no drop means it does not."),
    Entry("Shortcut audit", "Shortcuts",
          "Test AUC recomputed with the film's borders, its centre, its lung fields (or everything but them), the "
          "heat map's hottest 10 % or a random 10 % hidden, with confidence intervals.",
          "If the AUC barely moves with the lungs hidden, the model does not need the lungs: it has learnt a shortcut "
          "such as a hospital's markers or processing; if it falls with only the lungs kept, it relies on what lies "
          "outside them."),
    Entry("Evidence on the lungs", "Shortcuts",
          "Over the test films, the mean share of each class's heat-map weight inside the lung fields (from the "
          "dataset's own lung masks when it has them, else from a small segmentation network), with a confidence "
          "interval, and how often the map's peak lies on the lungs.",
          "Compare it with chance, the lungs' own share of the image: a share well above it means the evidence for "
          "the class comes from the lungs; near or below it, from elsewhere on the film, which the shortcut audit "
          "then tests."),
    Entry("Source probe", "Shortcuts",
          "Inside one class, how well a simple linear classifier on a model's features tells the films' sources "
          "(hospitals) apart, cross-validated over the test patients, as an AUC with a confidence interval.",
          "Near 0.5 the model's features no longer carry the hospital; near 1 they still do, so its calls can lean on "
          "the hospital instead of the lungs."),
    Entry("Within-source AUC", "Shortcuts",
          "The AUC of telling two classes apart using only the test films of one source, where both classes occur "
          "(e.g. Normal vs Pneumonia inside one hospital), beside the thumbnail baseline scored the same way.",
          "Inside one hospital the hospital cannot explain the score: clearly above the baseline is disease signal; "
          "a model that loses its headline AUC but keeps or raises this one is the better model."),
    Entry("Source deconfounding", "Shortcuts",
          "Training against an adversary that tries to tell each film's source from the model's features within "
          "its class, while the backbone is trained to leave it guessing: its answer pushed towards uniform over the "
          "sources (the default) or its gradient reversed (train.py --deconfound source).",
          "It should lower the source probe without lowering the within-source AUC; the headline AUC may fall "
          "where the hospital was doing the work."),
    Entry("Deletion AUC", "Heatmaps",
          "The area under the class probability as the hottest pixels are blurred away first.",
          "Lower is better: a faithful map finds what the score depends on, so deleting it drops the score fast."),
    # ------------------------------------------------------------ maps
    Entry("PCA", "Latent maps",
          "Principal component analysis: a linear projection of the features onto their directions of largest "
          "variation.",
          "Distances are faithful but clusters may overlap; the first two components are the map."),
    Entry("PCA-50 units", "Latent maps",
          "Distances measured in the first 50 principal components of the standardised features (each feature "
          "scaled to unit variance).",
          "Used for nearest neighbours and out-of-distribution checks; compare a distance with the training "
          "images' own, not with a fixed number."),
    Entry("t-SNE", "Latent maps",
          "A non-linear map that keeps each image's nearest neighbours close.",
          "Trust the neighbourhoods, not the distances between clusters or their sizes."),
    Entry("UMAP", "Latent maps",
          "A non-linear map like t-SNE that also keeps more of the global layout.",
          "Neighbourhoods are meaningful; large distances only roughly."),
    Entry("Trustworthiness", "Latent maps",
          "0–1: how far an image's neighbours on the map are also its neighbours in the model's features.",
          "Above 0.9 the map's neighbourhoods can be trusted; lower, the picture invents neighbours."),
    Entry("kNN label agreement", "Latent maps",
          "The share of each image's 10 nearest neighbours that carry its label, on the map and in the features.",
          "Close to the features' value means the map keeps the class structure."),
    Entry("SOM", "Self-organizing map",
          "A self-organizing map: a hexagonal grid of prototype feature vectors fitted so that neighbouring "
          "nodes hold similar images.",
          "Each image sits on its best-matching node; regions of the map gather similar films."),
    Entry("U-matrix", "Self-organizing map",
          "Per node, the mean feature distance to its neighbouring nodes.",
          "Light valleys are clusters; dark ridges are borders between them."),
    Entry("Hits", "Self-organizing map",
          "How many training images a node holds.",
          "Empty nodes sit on borders between clusters."),
    Entry("QE", "Self-organizing map",
          "Quantization error: the distance from an image to its best-matching node.",
          "An image with a QE above almost all training images' is unlike them (out-of-distribution)."),
    Entry("TE", "Self-organizing map",
          "Topographic error: the share of images whose best and second-best nodes are not neighbours.",
          "Low (below ~0.1) means the map's layout is smooth and can be read as a landscape."),
    Entry("Purity", "Self-organizing map",
          "The share of a node's images that carry its most common class.",
          "Pale nodes mix classes; saturated nodes are pure."),
]

ENTRIES: dict[str, Entry] = {e.term: e for e in _ENTRIES}
GROUPS: list[str] = list(dict.fromkeys(e.group for e in _ENTRIES))


def slug(term: str) -> str:
    """The anchor of a term on the Glossary page: lower case, letters and digits joined by '-'."""
    text = term.lower().replace("'", "").replace("+", " plus")
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def group_anchor(group: str) -> str:
    """The anchor of a group's header ('group-…', so that a group never takes a term's anchor: the group
    "Calibration" and the term "Calibration")."""
    return f"group-{slug(group)}"


def contents_markdown(groups: list[str] | None = None) -> str:
    """The contents list at the top of the Glossary page: one line per group, its name then each of its
    terms, every one a link to its anchor on the page (in-page links: ``#anchor``)."""
    return "\n".join(f"- **[{g}](#{group_anchor(g)})**: " + " · ".join(f"[{e.term}](#{slug(e.term)})" for e in entries(g))
                     for g in (GROUPS if groups is None else groups))


def anchors() -> dict[str, str]:
    """Every anchor the Glossary page draws -> its text (the groups' and the terms')."""
    return {**{group_anchor(g): g for g in GROUPS}, **{slug(e.term): e.term for e in _ENTRIES}}


def link(term: str, text: str | None = None) -> str:
    """Markdown link to a term's entry (raises ``KeyError`` for a term the glossary lacks, so a
    caption cannot link to nothing)."""
    entry = ENTRIES[term]
    return f"[{text or entry.term}](/{PAGE_URL}#{slug(entry.term)})"


def entries(group: str | None = None) -> list[Entry]:
    return [e for e in _ENTRIES if group is None or e.group == group]
