"""Fit the engine's confidence on development data: ``python -m worker.mapping.calibrate FILE... [--write]``.

A logistic regression predicts "the top-1 code is right" from the ranking's features (best score,
margin to the runner-up, margin to the best candidate of another concept, direct name match,
direct name match, share of the query's words explained). Rows whose expected code is not in the
reference count as "wrong" whatever the engine says: they teach it to abstain when nothing in the
reference fits; they are reweighted to a deployment prior (``--outside-share``, 15% by default),
because the MIMIC dictionary is mostly ICU tests outside a routine-report reference. Fit on development files only
(our own development lists, the MIMIC-III labels), never on the held-out evaluation lists. The
calibration is written for the model it was fitted with, with the fingerprint of the knowledge it saw
and its cross-validated selective accuracy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

FEATURES = ("score", "margin", "concept_margin", "direct", "coverage", "unknown")


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


def cross_validate(x: np.ndarray, y: np.ndarray, outside: np.ndarray, weights: np.ndarray, threshold: float,
                   folds: int = 5, seed: int = 11) -> dict[str, float]:
    """Selective accuracy out of fold: the share of inside-the-reference rows answered, the precision of
    those answers, and how often a row whose code is outside the reference gets a confident code."""
    order = np.random.default_rng(seed).permutation(len(y))
    p = np.zeros(len(y))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        p[test] = predict(fit_logistic(x[train], y[train], weights[train]), x[test])
    answered = p >= threshold
    inside = ~outside
    return {
        "rows": int(len(y)),
        "inside_rows": int(inside.sum()),
        "top1_inside": round(float(y[inside].mean()), 4) if inside.any() else 0.0,
        "answered_inside": round(float(answered[inside].mean()), 4) if inside.any() else 0.0,
        "precision_inside": round(float(y[inside & answered].mean()), 4) if (inside & answered).any() else 0.0,
        "confident_outside": round(float(answered[outside].mean()), 4) if outside.any() else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--write", action="store_true", help="write the model's calibration file")
    parser.add_argument("--outside-share", type=float, default=0.15,
                        help="weight of tests outside the reference, as a share of all rows (deployment prior)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--index-dir", default=None)
    args = parser.parse_args(argv)
    if any("heldout" in f for f in args.files):
        raise SystemExit("refusing to calibrate on the held-out evaluation list")
    from worker.mapping.decide import Calibration, calibration_path
    from worker.mapping.engine import MappingEngine
    from worker.mapping.model import model_label, resolve_model

    label = model_label(resolve_model(args.model))
    provisional = Calibration(model=label, intercept=0.0, weights=tuple((f, 0.0) for f in FEATURES))
    engine = MappingEngine.load(model=args.model, index_dir=args.index_dir, calibration=provisional)
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
    cv = cross_validate(x, y, outside, weights, calibration.threshold)
    print(f"5-fold cross-validated: of the rows whose code is in the reference, answered "
          f"{cv['answered_inside']:.1%} with precision {cv['precision_inside']:.1%} (top-1 {cv['top1_inside']:.1%}); "
          f"rows whose code is outside: a confident code {cv['confident_outside']:.1%} of the time")
    print(json.dumps({"intercept": round(calibration.intercept, 4),
                      "weights": {f: round(v, 4) for f, v in calibration.weights}}))
    if args.write:
        path = calibration.save(calibration_path(label), fitted_on=[Path(f).name for f in args.files],
                                cross_validated=cv)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
