"""Full fine-tuning vs a low-rank (LoRA-style) update of the same tiny model, measured.

A toy that shows the method, not a benchmark of real models: a 64×64 linear "model"
is adapted to a new task whose change from the pretrained weights is low-rank. The full
fine-tune updates all 4,096 weights; the low-rank one freezes them and trains a rank-2
update B·A (256 weights). Both still pay the frozen forward pass, as LoRA does (here
it is most of the work); what the low-rank one saves is the weight gradients and
updates. Pure Python, a few seconds:

    PYTHONPATH=. python examples/finetune_full_vs_lora.py
"""

from __future__ import annotations

import random

from sci import Tracker

D, RANK, EPOCHS, LR = 64, 2, 5, 0.006
Matrix = list[list[float]]


def matvec(m: Matrix, x: list[float]) -> list[float]:
    return [sum(a * b for a, b in zip(row, x, strict=True)) for row in m]


def task(seed: int) -> tuple[Matrix, list[tuple[list[float], list[float]]], list[tuple]]:
    """Pretrained weights, and train/test pairs of the new task (pretrained + rank-2 shift)."""
    rng = random.Random(seed)
    w0 = [[rng.gauss(0, 1 / D**0.5) for _ in range(D)] for _ in range(D)]
    u = [[rng.gauss(0, 0.6) for _ in range(RANK)] for _ in range(D)]
    v = [[rng.gauss(0, 0.6 / D**0.5) for _ in range(D)] for _ in range(RANK)]
    target = [
        [w0[i][j] + sum(u[i][k] * v[k][j] for k in range(RANK)) for j in range(D)] for i in range(D)
    ]
    pairs = []
    for _ in range(500):
        x = [rng.gauss(0, 1) for _ in range(D)]
        pairs.append((x, [y + rng.gauss(0, 0.01) for y in matvec(target, x)]))
    return w0, pairs[:300], pairs[300:]


def full_finetune(w0: Matrix, data: list) -> Matrix:
    w = [row[:] for row in w0]
    for _ in range(EPOCHS):
        for x, y in data:
            err = [p - t for p, t in zip(matvec(w, x), y, strict=True)]
            for i in range(D):  # every weight gets a gradient and an update
                g, row = LR * err[i], w[i]
                w[i] = [wij - g * xj for wij, xj in zip(row, x, strict=True)]
    return w


def lora_finetune(w0: Matrix, data: list, seed: int = 7) -> Matrix:
    rng = random.Random(seed)
    a = [[rng.gauss(0, 0.3 / D**0.5) for _ in range(D)] for _ in range(RANK)]
    b = [[0.0] * RANK for _ in range(D)]  # B = 0: training starts from the pretrained model
    for _ in range(EPOCHS):
        for x, y in data:
            ax = matvec(a, x)
            pred = [
                base + sum(bik * h for bik, h in zip(bi, ax, strict=True))
                for base, bi in zip(matvec(w0, x), b, strict=True)
            ]
            err = [p - t for p, t in zip(pred, y, strict=True)]
            bt_err = [sum(b[i][k] * err[i] for i in range(D)) for k in range(RANK)]
            b = [
                [bik - LR * e * h for bik, h in zip(bi, ax, strict=True)]
                for bi, e in zip(b, err, strict=True)
            ]
            a = [
                [akj - LR * g * xj for akj, xj in zip(ak, x, strict=True)]
                for ak, g in zip(a, bt_err, strict=True)
            ]
    return [
        [w0[i][j] + sum(b[i][k] * a[k][j] for k in range(RANK)) for j in range(D)] for i in range(D)
    ]


def mse(w: Matrix, data: list) -> float:
    return sum(
        sum((p - t) ** 2 for p, t in zip(matvec(w, x), y, strict=True)) for x, y in data
    ) / len(data)


def main() -> None:
    w0, train, test = task(seed=3)
    print(f"toy task: a {D}×{D} linear model; test error before fine-tuning {mse(w0, test):.4f}")
    results = []
    for name, params, method in (
        ("full fine-tune", D * D, full_finetune),
        (f"low-rank (rank {RANK})", 2 * D * RANK, lora_finetune),
    ):
        with Tracker(app="finetune", units=len(train)) as t:
            w = method(w0, train)
        results.append((name, params, mse(w, test), t))
    print(
        f"\n{'method':<20} {'trained':>7} {'test error':>10} {'cpu s':>6} {'energy J':>9}"
        f" {'mg CO2e':>8} {'µg per example':>14}"
    )
    for name, params, err, t in results:
        print(
            f"{name:<20} {params:>7} {err:>10.4f} {t.cpu_s:>6.2f} {t.energy_joules:>9.2f}"
            f" {t.carbon_g * 1000:>8.3f} {t.sci() * 1e6:>14.2f}"
        )
    (_, _, e_full, full), (_, _, e_lora, lora) = results
    print(
        f"\nlow-rank vs full: {lora.carbon_g / full.carbon_g:.0%} of the carbon,"
        f" test error {e_lora:.4f} vs {e_full:.4f}"
    )
    print(
        "a toy: real LoRA saves memory and optimizer state on models with billions of"
        " weights; measure yours the same way"
    )


if __name__ == "__main__":
    main()
