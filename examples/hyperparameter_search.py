"""Energy-aware hyperparameter search: trials compared by accuracy per gram of CO2e.

A tiny logistic regression in pure Python on a synthetic two-class task, trained with
different numbers of epochs and feature sets. One ``Tracker`` measures the search and
each trial is a step of it, so every trial gets its own energy and carbon. Run:

    PYTHONPATH=. python examples/hyperparameter_search.py
"""

from __future__ import annotations

import math
import random

from sci import Tracker


def make_data(n: int, seed: int) -> list[tuple[list[float], int]]:
    """Points in 6 dimensions; the class depends on two features and a product of them."""
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        x = [rng.gauss(0, 1) for _ in range(6)]
        score = 1.5 * x[0] - x[1] + 0.8 * x[0] * x[1] + rng.gauss(0, 0.5)
        data.append((x, int(score > 0)))
    return data


def features(x: list[float], pairs: bool) -> list[float]:
    """The raw inputs, plus (``pairs``) every product of two of them: costlier, richer."""
    out = [1.0, *x]
    if pairs:
        out += [x[i] * x[j] for i in range(len(x)) for j in range(i, len(x))]
    return out


def train(data: list[tuple[list[float], int]], epochs: int, pairs: bool) -> list[float]:
    rows = [(features(x, pairs), y) for x, y in data]
    w = [0.0] * len(rows[0][0])
    lr = 0.05
    for _ in range(epochs):
        for f, y in rows:
            z = sum(wi * fi for wi, fi in zip(w, f, strict=True))
            p = 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))
            g = p - y
            w = [wi - lr * g * fi for wi, fi in zip(w, f, strict=True)]
    return w


def accuracy(w: list[float], data: list[tuple[list[float], int]], pairs: bool) -> float:
    right = 0
    for x, y in data:
        z = sum(wi * fi for wi, fi in zip(w, features(x, pairs), strict=True))
        right += int((z > 0) == bool(y))
    return right / len(data)


def main() -> None:
    train_set, test_set = make_data(4000, seed=1), make_data(1000, seed=2)
    trials = [(epochs, pairs) for pairs in (False, True) for epochs in (5, 20, 60)]
    rows = []
    with Tracker(app="hyperparameter-search") as t:
        for epochs, pairs in trials:
            w = train(train_set, epochs, pairs)
            acc = accuracy(w, test_set, pairs)  # evaluating is part of the trial's cost
            name = f"{'pairs' if pairs else 'linear'}/{epochs} epochs"
            rows.append((name, acc, t.step(name, units=1)))  # figures since the last step

    print(
        f"{'trial':<18} {'accuracy':>8} {'cpu s':>6} {'energy J':>9} {'mg CO2e':>8}"
        f" {'accuracy per gram':>18}"
    )
    for name, acc, step in rows:
        per_gram = acc / step.carbon_g if step.carbon_g > 0 else float("inf")
        print(
            f"{name:<18} {acc:>8.3f} {step.cpu_s:>6.2f} {step.energy_joules:>9.2f}"
            f" {step.carbon_g * 1000:>8.3f} {per_gram:>18,.0f}"
        )
    best_acc = max(rows, key=lambda r: r[1])
    best_eff = max(rows, key=lambda r: r[1] / max(r[2].carbon_g, 1e-12))
    print(
        f"\nmost accurate: {best_acc[0]} ({best_acc[1]:.3f},"
        f" {best_acc[2].carbon_g * 1000:.3f} mg CO2e)"
    )
    print(
        f"best: {best_eff[0]} by accuracy per gram ({best_eff[1]:.3f},"
        f" {best_eff[2].carbon_g * 1000:.3f} mg CO2e)"
    )
    print(
        f"whole search: {t.cpu_s:.2f} CPU s, {t.energy_joules:.1f} J,"
        f" {t.carbon_g * 1000:.3f} mg CO2e; {t.sci() * 1000:.3f} mg per trial"
        f" (tracker's own sampling: {t.overhead_cpu_s:.3f} CPU s)"
    )


if __name__ == "__main__":
    main()
