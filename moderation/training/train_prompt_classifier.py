"""Train the prompt classifier on the labelled set and write `moderation/data/prompt_classifier.npz`.

    python -m moderation.training.train_prompt_classifier [--data PATH] [--out PATH] [--max-fpr 0.0]

One logistic regression per category (scikit-learn, liblinear) over the hashed features of
`moderation.classifier`, trained on the "train" part only. A prompt labelled sexual/minors also counts as
sexual. The regularisation strength is chosen, and each category's threshold calibrated, on out-of-fold
probabilities from the training part (folds keep all variants of one phrase together): the threshold is
the lowest at which at most `--max-fpr` of the benign training prompts would be refused by the classifier
alone, and never below 0.5. The held-out "test" part is only scored, at the end, and the result printed and
stored in the model's metadata.

Needs scikit-learn (a training-only dependency: the bot runs the model with numpy).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from moderation.classifier import (
    DEFAULT_DIM,
    MIN_CONTENT_WORDS,
    MODEL_FILE,
    REQUIRES,
    PromptClassifier,
    content_words,
    featurize,
)
from moderation.policy import CATEGORIES
from moderation.prompt_gate import PromptGate
from moderation.training.prompt_set import DATA_FILE, read

FloatArray = npt.NDArray[np.float64]
C_GRID = (1.0, 3.0, 10.0, 30.0)
FOLDS = 5
MIN_THRESHOLD = 0.5


CLASSIFIER_LISTS = ("groups.txt", "allow.txt")
"""The term lists that shape what the classifier reads (group names and harmless phrases are dropped from it):
change one and the model must be retrained."""


def data_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lists_digest(data_dir: Path = DATA_FILE.parent) -> str:
    digest = hashlib.sha256()
    for name in CLASSIFIER_LISTS:
        digest.update((data_dir / name).read_bytes())
    return digest.hexdigest()


def targets(labels: Sequence[str], category: str) -> npt.NDArray[np.int64]:
    hits = {category, "sexual/minors"} if category == "sexual" else {category}
    return np.array([label in hits for label in labels], dtype=np.int64)


def classifier_texts(prompts: Sequence[str]) -> list[str]:
    """The prompts as the gate shows them to the classifier (normalised; harmless phrases and group names dropped)."""
    gate = PromptGate.from_package(classifier=False)
    return [gate.classifier_text(p) for p in prompts]


def matrix(texts: Sequence[str], dim: int) -> Any:
    from scipy.sparse import csr_matrix  # type: ignore[import-untyped, import-not-found, unused-ignore]

    rows, cols, vals = [], [], []
    for row, text in enumerate(classifier_texts(texts)):
        indices, values = featurize(text, dim)
        rows.extend([row] * len(indices))
        cols.extend(indices.tolist())
        vals.extend(values.tolist())
    return csr_matrix((vals, (rows, cols)), shape=(len(texts), dim), dtype=np.float64)


def _model(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped, import-not-found, unused-ignore]

    return LogisticRegression(C=c, class_weight="balanced", solver="liblinear", max_iter=1000, random_state=0)


def out_of_fold(x: Any, y: npt.NDArray[np.int64], groups: Sequence[str], c: float) -> FloatArray:
    from sklearn.model_selection import GroupKFold  # type: ignore[import-untyped, import-not-found, unused-ignore]

    scores = np.zeros(len(y))
    for fit_rows, score_rows in GroupKFold(n_splits=FOLDS).split(x, y, groups):
        model = _model(c).fit(x[fit_rows], y[fit_rows])
        scores[score_rows] = model.predict_proba(x[score_rows])[:, 1]
    return scores


def choose_threshold(scores: FloatArray, benign: npt.NDArray[np.bool_], max_fpr: float) -> float:
    """The lowest threshold (at least MIN_THRESHOLD) that refuses at most `max_fpr` of the benign prompts."""
    allowed = int(np.floor(max_fpr * benign.sum()))
    benign_scores = np.sort(scores[benign])[::-1]
    # Refusing the `allowed` highest benign scores is tolerated; the next one must pass.
    floor = benign_scores[allowed] if allowed < len(benign_scores) else 0.0
    return float(min(0.99, max(MIN_THRESHOLD, np.nextafter(floor, 1.0))))


def train(
    rows: list[dict[str, str]],
    *,
    dim: int = DEFAULT_DIM,
    max_fpr: float = 0.0,
    c_grid: Sequence[float] = C_GRID,
    log: Any = print,
) -> PromptClassifier:
    """Fit on the rows whose split is "train"; choose C and thresholds on their out-of-fold scores."""
    from sklearn.metrics import average_precision_score  # type: ignore[import-untyped, import-not-found, unused-ignore]

    train_rows = [r for r in rows if r["split"] == "train"]
    texts = [r["text"] for r in train_rows]
    labels = [r["label"] for r in train_rows]
    groups = [r["group"] for r in train_rows]
    benign = np.array([label == "benign" for label in labels])
    x = matrix(texts, dim)
    words = np.array([content_words(t) for t in classifier_texts(texts)])
    weights = np.zeros((len(CATEGORIES), dim), dtype=np.float32)
    bias = np.zeros(len(CATEGORIES), dtype=np.float32)
    chosen_c: dict[str, float] = {}
    oof: dict[str, FloatArray] = {}
    ap: dict[str, float] = {}
    for k, category in enumerate(CATEGORIES):
        y = targets(labels, category)
        best: tuple[float, float, FloatArray] | None = None
        for c in c_grid:
            scores = out_of_fold(x, y, groups, c)
            precision = float(average_precision_score(y, scores))
            if best is None or precision > best[0]:
                best = (precision, c, scores)
        assert best is not None
        ap[category], chosen_c[category], oof[category] = best
        model = _model(chosen_c[category]).fit(x, y)
        weights[k] = model.coef_[0].astype(np.float32)
        bias[k] = np.float32(model.intercept_[0])
    thresholds: dict[str, float] = {}
    oof_report: dict[str, dict[str, float]] = {}
    for category in CATEGORIES:
        y = targets(labels, category)
        scores = oof[category].copy()
        # Calibrate as the gate decides: never on too few words, and a required category must be likely too.
        scores[words < MIN_CONTENT_WORDS] = 0.0
        needed = REQUIRES.get(category)
        if needed is not None:
            scores[oof[needed[0]] < needed[1]] = 0.0
        threshold = choose_threshold(scores, benign, max_fpr)
        recall = float(((scores >= threshold) & (y == 1)).sum() / max(1, y.sum()))
        fpr = float(((scores >= threshold) & benign).sum() / benign.sum())
        thresholds[category] = round(threshold, 4)
        oof_report[category] = {"average_precision": round(ap[category], 4), "recall": round(recall, 4),
                                "benign_fpr": round(fpr, 4)}  # fmt: skip
        log(f"{category:17} C={chosen_c[category]:<5g} threshold={threshold:.3f}  out-of-fold: AP {ap[category]:.3f} "
            f"recall {recall:.3f} benign FPR {fpr:.3f}")  # fmt: skip
    meta = {
        "trained_on": len(train_rows),
        "regularisation_C": chosen_c,
        "max_benign_fpr": max_fpr,
        "out_of_fold": oof_report,
    }
    return PromptClassifier(tuple(CATEGORIES), weights, bias, thresholds, dim, meta)


def evaluate(model: PromptClassifier, rows: list[dict[str, str]]) -> dict[str, Any]:
    """The classifier alone on the held-out part: recall per category and the benign false-positive rate."""
    test = [r for r in rows if r["split"] == "test"]
    flagged = []
    for text in classifier_texts([r["text"] for r in test]):
        scores = model.scores(text)
        flagged.append({c for c in scores if model.confident(c, scores, words=content_words(text))})
    harmful = [(r, f) for r, f in zip(test, flagged, strict=True) if r["label"] != "benign"]
    benign = [f for r, f in zip(test, flagged, strict=True) if r["label"] == "benign"]
    per_category = {}
    for category in CATEGORIES:
        hits = [bool(f) for r, f in harmful if r["label"] == category]
        exact = [category in f for r, f in harmful if r["label"] == category]
        per_category[category] = {"n": len(hits), "recall_any": round(sum(hits) / max(1, len(hits)), 4),
                                  "recall_own": round(sum(exact) / max(1, len(exact)), 4)}  # fmt: skip
    return {
        "held_out": len(test),
        "recall": round(sum(bool(f) for _, f in harmful) / max(1, len(harmful)), 4),
        "false_positive_rate": round(sum(bool(f) for f in benign) / max(1, len(benign)), 4),
        "per_category": per_category,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DATA_FILE, help="the labelled set (JSON lines)")
    parser.add_argument("--out", type=Path, default=DATA_FILE.parent / MODEL_FILE, help="where to write the model")
    parser.add_argument(
        "--max-fpr", type=float, default=0.0, help="share of benign training prompts the classifier may refuse"
    )
    parser.add_argument("--dim", type=int, default=DEFAULT_DIM, help="hashed feature buckets")
    args = parser.parse_args(argv)
    try:
        import sklearn  # type: ignore[import-untyped, import-not-found, unused-ignore]  # noqa: F401 - fail early
    except ImportError:
        print("training needs scikit-learn: pip install 'imagine[train]'", file=sys.stderr)
        return 2
    rows = read(args.data)
    model = train(rows, dim=args.dim, max_fpr=args.max_fpr)
    held_out = evaluate(model, rows)
    model = PromptClassifier(
        model.categories, model.weights, model.bias, model.thresholds, model.dim,
        {**model.meta, "data_sha256": data_digest(args.data), "lists_sha256": lists_digest(), "held_out": held_out},
    )  # fmt: skip
    model.save(args.out)
    print(json.dumps({"held_out_classifier_alone": held_out}, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
