"""Fit the engine's confidence on development data: ``python -m worker.mapping.calibrate FILE... [--write]``.

A logistic regression predicts "the top-1 code is right" from the ranking's features (best score,
margin to the runner-up, margin to the best candidate of another concept, direct name match,
direct name match, share of the query's words explained). Rows whose expected code is not in the
reference count as "wrong" whatever the engine says: they teach it to abstain when nothing in the
reference fits; they are reweighted to a deployment prior (``--outside-share``, 15% by default),
because the MIMIC dictionary is mostly ICU tests outside a routine-report reference. Fit on development files only
(our own development list, the MIMIC-III labels), never on the held-out evaluation list.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import numpy as np

FEATURES = ("score", "margin", "concept_margin", "direct", "coverage")


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--write", action="store_true", help="write worker/mapping/data/calibration.csv")
    parser.add_argument("--outside-share", type=float, default=0.15,
                        help="weight of tests outside the reference, as a share of all rows (deployment prior)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--index-dir", default=None)
    args = parser.parse_args(argv)
    if any("heldout" in f for f in args.files):
        raise SystemExit("refusing to calibrate on the held-out evaluation list")
    from worker.mapping.decide import CALIBRATION_PATH, Calibration
    from worker.mapping.engine import MappingEngine

    engine = MappingEngine.load(model=args.model, index_dir=args.index_dir)
    x, y, outside = collect(engine, args.files)
    # MIMIC's ICU dictionary is mostly tests outside a routine-report reference (blood gases, body fluids);
    # on lab reports most tests are inside it. Reweight the outside rows to the deployment prior.
    weights = np.ones(len(y))
    if outside.any() and (~outside).any():
        share = args.outside_share
        weights[outside] = share * (~outside).sum() / ((1 - share) * outside.sum())
    w = fit_logistic(x, y, weights)
    calibration = Calibration(w0=w[0], w_score=w[1], w_margin=w[2], w_concept=w[3], w_direct=w[4],
                              w_coverage=w[5])
    p = 1.0 / (1.0 + np.exp(-np.clip(np.hstack([np.ones((len(x), 1)), x]) @ w, -30, 30)))
    bins = np.clip((p * 10).astype(int), 0, 9)
    print(f"{len(y)} rows ({outside.sum()} outside the reference, weighted {weights[outside][:1]}), "
          f"{y.mean():.1%} right at top-1")
    print("confidence bin   rows   predicted   observed")
    for b in range(10):
        mask = bins == b
        if mask.any():
            print(f"  {b / 10:.1f}-{(b + 1) / 10:.1f}      {mask.sum():5d}      {p[mask].mean():.2f}"
                  f"       {y[mask].mean():.2f}")
    answered = p >= calibration.threshold
    print(f"answered {answered.mean():.1%}, precision when answering {y[answered].mean():.1%}, "
          f"right answers withheld {(y[~answered] == 1).sum()}")
    print(json.dumps({k: round(float(v), 4) for k, v in asdict(calibration).items()}))
    if args.write:
        calibration.save()
        print(f"wrote {CALIBRATION_PATH}")


if __name__ == "__main__":
    main()
