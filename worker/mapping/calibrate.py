"""Fit the engine's confidence on development data: ``python -m worker.mapping.calibrate FILE... [--write]``.

A logistic regression predicts "the top-1 code is right" from the ranking's features (best score,
margin to the best candidate of another analyte, margin to the best rival variant of the same analyte,
direct name match, the synonym table's usual variant, LOINC short-name match, whether the unit fits,
share of the query's words explained, unknown words). Rows whose expected code is not in the
reference count as "wrong" whatever the engine says: they teach it to abstain when nothing in the
reference fits; they are reweighted to a deployment prior (``--outside-share``, 15% by default),
because the MIMIC dictionary is mostly ICU tests outside a routine-report reference. Fit on development files only
(our own development lists, the MIMIC-III labels), never on the held-out evaluation lists. The
calibration is written for the model it was fitted with, with the fingerprint of the knowledge it saw
and its cross-validated selective accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

FEATURES = ("score", "concept_margin", "variant_margin", "direct", "usual", "short", "unit_fit", "coverage", "unknown")


def fit_logistic(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, l2: float = 1.0,
                 steps: int = 50) -> np.ndarray:
    """Weighted logistic regression by Newton's method, L2 penalty (intercept unpenalised); returns [w0, w...]."""
    design = np.hstack([np.ones((len(x), 1)), x])
    weights = np.ones(len(y)) if weights is None else weights
    w = np.zeros(design.shape[1])
    penalty = np.eye(design.shape[1]) * l2
    penalty[0, 0] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -30, 30)))
        gradient = design.T @ (weights * (p - y)) + penalty @ w
        hessian = design.T @ (design * (weights * p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def collect(engine, paths: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels (top-1 right) and whether the expected code is outside the reference."""
    from worker.mapping.evaluate import read_cases

    rows, labels, outside = [], [], []
    for path in paths:
        _, cases = read_cases(path)
        labelled = [c for c in cases if c.expected_code]
        for case, (code, features) in zip(labelled, engine.ranking_features([c.query for c in labelled]),
                                           strict=True):
            if not features:
                continue
            rows.append([float(features[f]) for f in FEATURES])
            labels.append(float(code == case.expected_code))
            outside.append(case.expected_code not in engine.reference)
    return np.array(rows), np.array(labels), np.array(outside)


def deployment_weights(outside: np.ndarray, share: float) -> np.ndarray:
    """Rows whose code is outside the reference reweighted to ``share`` of all rows (a deployment prior)."""
    weights = np.ones(len(outside))
    if outside.any() and (~outside).any():
        weights[outside] = share * (~outside).sum() / ((1 - share) * outside.sum())
    return weights


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.hstack([np.ones((len(x), 1)), x]) @ w, -30, 30)))


def out_of_fold(x: np.ndarray, y: np.ndarray, weights: np.ndarray, folds: int = 5, seed: int = 11) -> np.ndarray:
    """Each row's confidence from a model fitted without its fold."""
    order = np.random.default_rng(seed).permutation(len(y))
    p = np.zeros(len(y))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        p[test] = predict(fit_logistic(x[train], y[train], weights[train]), x[test])
    return p


def selective(p: np.ndarray, y: np.ndarray, outside: np.ndarray, threshold: float) -> dict[str, float]:
    """Answered share and precision on rows whose code is in the reference; confident share on the others."""
    answered = p >= threshold
    inside = ~outside

    def share(mask, of):
        return round(float(mask[of].mean()), 4) if of.any() else 0.0

    return {"answered_inside": share(answered, inside),
            "precision_inside": round(float(y[inside & answered].mean()), 4) if (inside & answered).any() else 0.0,
            "outside": share(answered, outside)}


def choose_thresholds(p: np.ndarray, y: np.ndarray, outside: np.ndarray, confident_outside: float,
                      confident_precision: float, band_precision: float) -> tuple[float, float]:
    """The review threshold: the lowest at which answers are precise enough and rows outside the reference
    rarely get a confident code. The answer threshold: the lowest at which the answers between it and the
    review threshold are still right at least ``band_precision`` of the time (they go to a reviewer)."""
    grid = np.round(np.arange(0.30, 0.991, 0.01), 2)
    review = next((t for t in grid if selective(p, y, outside, t)["outside"] <= confident_outside
                   and selective(p, y, outside, t)["precision_inside"] >= confident_precision), grid[-1])
    inside = ~outside
    answer = review
    for t in grid[grid < review][::-1]:
        band = inside & (p >= t) & (p < review)
        if band.any() and y[band].mean() < band_precision:
            break
        answer = t
    return float(answer), float(review)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--write", action="store_true", help="write the model's calibration file")
    parser.add_argument("--outside-share", type=float, default=0.15,
                        help="weight of tests outside the reference, as a share of all rows (deployment prior)")
    parser.add_argument("--confident-outside", type=float, default=0.03,
                        help="most rows outside the reference that may get a confident code (no review flag)")
    parser.add_argument("--confident-precision", type=float, default=0.93,
                        help="least precision of the confident answers on rows inside the reference")
    parser.add_argument("--band-precision", type=float, default=0.5,
                        help="least precision of the answers sent for review (between the two thresholds)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--encoder", default=None, help="how the model runs (ML_WORKER_ENCODER): each has its own")
    parser.add_argument("--index-dir", default=None)
    args = parser.parse_args(argv)
    if any("heldout" in f for f in args.files):
        raise SystemExit("refusing to calibrate on the held-out evaluation list")
    from worker.mapping.decide import Calibration, calibration_path
    from worker.mapping.engine import MappingEngine

    provisional = Calibration(model="provisional", intercept=0.0, weights=tuple((f, 0.0) for f in FEATURES))
    engine = MappingEngine.load(model=args.model, index_dir=args.index_dir, encoder_kind=args.encoder,
                                calibration=provisional)
    label = engine.model_label
    x, y, outside = collect(engine, args.files)
    weights = deployment_weights(outside, args.outside_share)
    w = fit_logistic(x, y, weights)
    calibration = Calibration(model=label, intercept=float(w[0]),
                              weights=tuple((f, float(v)) for f, v in zip(FEATURES, w[1:], strict=True)),
                              knowledge=engine.knowledge)
    p = predict(w, x)
    bins = np.clip((p * 10).astype(int), 0, 9)
    print(f"{len(y)} rows ({outside.sum()} outside the reference), {y.mean():.1%} right at top-1")
    print("confidence bin   rows   predicted   observed")
    for b in range(10):
        mask = bins == b
        if mask.any():
            print(f"  {b / 10:.1f}-{(b + 1) / 10:.1f}      {mask.sum():5d}      {p[mask].mean():.2f}"
                  f"       {y[mask].mean():.2f}")
    oof = out_of_fold(x, y, weights)
    answer, review = choose_thresholds(oof, y, outside, args.confident_outside, args.confident_precision,
                                       args.band_precision)
    calibration = dataclasses.replace(calibration, threshold=answer, review_threshold=review)
    cv = {"rows": int(len(y)), "inside_rows": int((~outside).sum()), "outside_rows": int(outside.sum()),
          "top1_inside": round(float(y[~outside].mean()), 4), "answer_threshold": answer, "review_threshold": review,
          "answered": selective(oof, y, outside, answer), "confident": selective(oof, y, outside, review)}
    print(f"5-fold cross-validated, thresholds {answer:.2f} (answer) and {review:.2f} (confident):")
    print(f"  rows inside the reference ({cv['inside_rows']}): top-1 {cv['top1_inside']:.1%}; "
          f"answered {cv['answered']['answered_inside']:.1%} at precision {cv['answered']['precision_inside']:.1%}; "
          f"confident {cv['confident']['answered_inside']:.1%} at precision {cv['confident']['precision_inside']:.1%}")
    print(f"  rows outside it ({cv['outside_rows']}): a code {cv['answered']['outside']:.1%}, "
          f"a confident code {cv['confident']['outside']:.1%}")
    print(json.dumps({"intercept": round(calibration.intercept, 4),
                      "weights": {f: round(v, 4) for f, v in calibration.weights}}))
    if args.write:
        path = calibration.save(calibration_path(label), fitted_on=[Path(f).name for f in args.files],
                                cross_validated=cv)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
