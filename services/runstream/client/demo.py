"""``runstream demo``: a small, real training job logged through the client.

Elastic-net linear regression (the model MLflow's own tutorial tunes) trained by proximal
gradient descent in pure Python on a synthetic data set with a known sparse truth, over a
grid of ``alpha`` × ``elasticNetParam``: one parent run, one nested run per grid point with
per-epoch metrics (train_loss, rmse, r2, mae, nonzero_coefs), a run whose learning rate
diverges and ends FAILED, a note, tags, and artifacts (the grid as CSV, coefficients as
JSON, the best model as an MLmodel-style directory). No numpy: it runs in a bare install.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import runstream.client.fluent as rs
from runstream.client.core import Run

Matrix = list[list[float]]

TRUE_WEIGHTS = (3.0, -2.0, 0.0, 1.5, 0.0, 0.0, 0.75, 0.0)
INTERCEPT = 4.0
GRID_ALPHA = (0.003, 0.03, 0.3)
GRID_L1 = (0.0, 0.5, 1.0)


@dataclass
class Dataset:
    x_train: Matrix
    y_train: list[float]
    x_valid: Matrix
    y_valid: list[float]
    means: list[float]
    scales: list[float]


@dataclass
class Fit:
    weights: list[float]
    intercept: float
    rmse: float
    r2: float
    mae: float


@dataclass
class DemoResult:
    experiment_id: str
    parent_run_id: str
    child_run_ids: list[str] = field(default_factory=list)
    failed_run_id: str | None = None
    best: dict[str, float] = field(default_factory=dict)
    points: int = 0
    seconds: float = 0.0


def make_dataset(n: int = 320, noise: float = 0.6, seed: int = 7) -> Dataset:
    rng = random.Random(seed)
    d = len(TRUE_WEIGHTS)
    x = [[rng.gauss(0.0, 1.0 + j * 0.25) for j in range(d)] for _ in range(n)]
    y = [INTERCEPT + sum(w * v for w, v in zip(TRUE_WEIGHTS, row, strict=True))
         + rng.gauss(0.0, noise) for row in x]
    cut = int(n * 0.8)
    train, valid = x[:cut], x[cut:]
    means = [sum(r[j] for r in train) / cut for j in range(d)]
    scales = [math.sqrt(sum((r[j] - means[j]) ** 2 for r in train) / cut) or 1.0 for j in range(d)]

    def standardise(rows: Matrix) -> Matrix:
        return [[(r[j] - means[j]) / scales[j] for j in range(d)] for r in rows]

    return Dataset(standardise(train), y[:cut], standardise(valid), y[cut:], means, scales)


def _predict(x: Matrix, w: Sequence[float], b: float) -> list[float]:
    return [b + sum(wj * xj for wj, xj in zip(w, row, strict=True)) for row in x]


def _scores(y: Sequence[float], pred: Sequence[float]) -> tuple[float, float, float]:
    n = len(y)
    mean = sum(y) / n
    sse = sum((a - p) ** 2 for a, p in zip(y, pred, strict=True))
    sst = sum((a - mean) ** 2 for a in y) or 1.0
    mae = sum(abs(a - p) for a, p in zip(y, pred, strict=True)) / n
    return math.sqrt(sse / n), 1.0 - sse / sst, mae


def train_elastic_net(
    data: Dataset,
    alpha: float,
    l1_ratio: float,
    *,
    learning_rate: float = 0.1,
    epochs: int = 60,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> Fit:
    """Proximal gradient descent on ½·MSE + α·(l1·|w|₁ + ½(1−l1)·|w|²)."""
    x, y = data.x_train, data.y_train
    n, d = len(x), len(x[0])
    w = [0.0] * d
    b = sum(y) / n
    rmse = r2 = mae = float("nan")
    for epoch in range(epochs):
        pred = _predict(x, w, b)
        resid = [p - t for p, t in zip(pred, y, strict=True)]
        grad = [sum(r * row[j] for r, row in zip(resid, x, strict=True)) / n
                + alpha * (1 - l1_ratio) * w[j] for j in range(d)]
        b -= learning_rate * sum(resid) / n
        shrink = learning_rate * alpha * l1_ratio
        w = [math.copysign(max(abs(v) - shrink, 0.0), v)
             for v in (wj - learning_rate * g for wj, g in zip(w, grad, strict=True))]
        loss = (sum(r * r for r in resid) / (2 * n)
                + alpha * (l1_ratio * sum(abs(v) for v in w)
                           + 0.5 * (1 - l1_ratio) * sum(v * v for v in w)))
        if not math.isfinite(loss) or loss > 1e12:
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {loss:.3g})")
        rmse, r2, mae = _scores(data.y_valid, _predict(data.x_valid, w, b))
        if on_epoch is not None:
            on_epoch(epoch, {"train_loss": loss, "rmse": rmse, "r2": r2, "mae": mae,
                             "nonzero_coefs": float(sum(1 for v in w if v != 0.0))})
    return Fit(w, b, rmse, r2, mae)


def _model_dir(root: Path, fit: Fit, data: Dataset, params: dict[str, float]) -> Path:
    model = root / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "MLmodel").write_text(
        "artifact_path: model\n"
        "flavors:\n"
        "  runstream_demo:\n"
        "    model_file: model.json\n"
        "    kind: elastic_net_linear_regression\n"
        f"    runstream_version: {_version()}\n"
        f"utc_time_created: '{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}'\n"
    )
    (model / "model.json").write_text(json.dumps({
        "weights": fit.weights, "intercept": fit.intercept,
        "feature_means": data.means, "feature_scales": data.scales, "params": params,
    }, indent=2))
    (model / "requirements.txt").write_text(f"runstream=={_version()}\n")
    return model


def _version() -> str:
    from runstream import __version__

    return __version__


def run_demo(
    experiment_name: str = "runstream-demo",
    *,
    epochs: int = 60,
    seed: int = 7,
    out: Callable[[str], None] = print,
) -> DemoResult:
    """Train the grid, logging through the default client (see :func:`runstream.configure`)."""
    t0 = time.monotonic()
    data = make_dataset(seed=seed)
    points = 0
    results: list[tuple[dict[str, float], Fit, str]] = []

    def logger(run: Run) -> Callable[[int, dict[str, float]], None]:
        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            nonlocal points
            run.log_metrics(metrics, step=epoch)
            points += len(metrics)
        return on_epoch

    with rs.start_run(
        experiment_name=experiment_name,
        run_name="elasticnet-grid",
        tags={"estimator_name": "ElasticNet", "stage": "tuning"},
        description="Grid search over alpha and elasticNetParam for an elastic-net linear "
        "regression, trained by proximal gradient descent (pure Python).",
    ) as parent:
        result = DemoResult(experiment_id=parent.experiment_id or "", parent_run_id=parent.run_id)
        parent.log_params({"n_train": len(data.y_train), "n_valid": len(data.y_valid),
                           "n_features": len(TRUE_WEIGHTS), "epochs": epochs,
                           "grid_alpha": list(GRID_ALPHA), "grid_elasticNetParam": list(GRID_L1)})
        parent.set_tag("status", "in-progress")
        for alpha in GRID_ALPHA:
            for l1 in GRID_L1:
                params = {"alpha": alpha, "elasticNetParam": l1, "learning_rate": 0.1,
                          "epochs": epochs}
                with rs.start_run(run_name=f"alpha={alpha} l1={l1}", nested=True,
                                  tags={"estimator_name": "ElasticNet"}) as child:
                    child.log_params(params)
                    fit = train_elastic_net(data, alpha, l1, epochs=epochs,
                                            on_epoch=logger(child))
                    child.log_dict({"weights": fit.weights, "intercept": fit.intercept},
                                   "coefficients.json")
                    result.child_run_ids.append(child.run_id)
                    results.append((params, fit, child.run_id))
                out(f"  alpha={alpha:<6} elasticNetParam={l1:<4} rmse={fit.rmse:.4f} "
                    f"r2={fit.r2:.4f}")
        # A learning rate far too high: the run ends FAILED, with its metrics up to then.
        try:
            with rs.start_run(run_name="diverging-lr", nested=True,
                              tags={"estimator_name": "ElasticNet"}) as bad:
                result.failed_run_id = bad.run_id
                bad.log_params({"alpha": 0.03, "elasticNetParam": 0.5, "learning_rate": 3.5})
                train_elastic_net(data, 0.03, 0.5, learning_rate=3.5, epochs=epochs,
                                  on_epoch=logger(bad))
        except FloatingPointError as exc:
            out(f"  diverging-lr: {exc} (run ended FAILED)")

        params, best, best_run = min(results, key=lambda r: r[1].rmse)
        parent.log_metrics({"best_rmse": best.rmse, "best_r2": best.r2, "best_mae": best.mae})
        points += 3
        parent.set_tags({"best_run_id": best_run, "best_alpha": params["alpha"],
                         "best_elasticNetParam": params["elasticNetParam"]})
        parent.delete_tag("status")
        rows = ["alpha,elasticNetParam,rmse,r2,mae,run_id"] + [
            f"{p['alpha']},{p['elasticNetParam']},{f.rmse:.6f},{f.r2:.6f},{f.mae:.6f},{rid}"
            for p, f, rid in results
        ]
        parent.log_text("\n".join(rows) + "\n", "grid_results.csv")
        with tempfile.TemporaryDirectory() as tmp:
            parent.log_model(_model_dir(Path(tmp), best, data, params), "model")
        parent.set_note(
            "Grid search over alpha and elasticNetParam for an elastic-net linear regression. "
            f"Best: alpha={params['alpha']}, elasticNetParam={params['elasticNetParam']} "
            f"(rmse {best.rmse:.4f}, r2 {best.r2:.4f}); the model is in artifacts/model."
        )
        result.best = {"alpha": params["alpha"], "elasticNetParam": params["elasticNetParam"],
                       "rmse": best.rmse, "r2": best.r2}
    result.points = points
    result.seconds = time.monotonic() - t0
    return result
