"""What a structured layer's initialisation really is: statistics of its effective dense matrix.

The research notes (001, 7 Oct 2018) pushed the identity through a 16-layer stacked ACDC and
compared the effective matrix's std and mean with Glorot's std for dimensions 4..256 ("Effective
W stdv 0.6778 vs Glorot 0.3536 at dim 8"). This generalises it to every registered method: for
each variant and dimension N, over ``seeds`` fresh initialisations of the N -> N 1x1 substitute,
the effective matrix W (:func:`lowrank.studies.layers.effective_matrix`) gives

- ``std``: the standard deviation of W's N^2 entries (mean over seeds), ``mean``: their mean,
  ``diag_mean``: the mean of W's diagonal (an ACDC stack starts near the identity);
- the reference stds a dense N -> N layer would have: Glorot ``sqrt(2/(in+out))``, Kaiming
  (fan-in, ReLU gain) ``sqrt(2/in)``, and PyTorch's default conv/linear init
  (``kaiming_uniform_(a=sqrt(5))``: U(-1/sqrt(in), 1/sqrt(in)), std ``1/sqrt(3 in)``).

Closed form used by the tests: one ACDC layer with diagonals i.i.d. N(1, s^2) and an orthonormal
DCT C has W = diag(a) C^T diag(d) C, so E[W] = I, E[mean W] = 1/N and
E[mean W^2] = (1 + s^2)^2 / N.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .layers import Variant, effective_matrix

DEFAULT_DIMS = (4, 8, 16, 32, 64, 128, 256)


def reference_stds(n: int) -> dict[str, float]:
    """The stds of a dense N -> N layer's weight under the usual initialisations."""
    return {"glorot": math.sqrt(2.0 / (n + n)), "kaiming": math.sqrt(2.0 / n), "torch_default": 1 / math.sqrt(3 * n)}


def init_stats(variant: Variant, n: int, seeds: int = 3) -> dict:
    """One row: the variant at dimension n, its effective matrix's statistics over ``seeds`` inits."""
    stds, means, diags = [], [], []
    with torch.no_grad():
        for seed in range(seeds):
            torch.manual_seed(seed)
            w = effective_matrix(variant.build(n).eval(), n).double()
            stds.append(float(w.std()))
            means.append(float(w.mean()))
            diags.append(float(w.diagonal().mean()))
    refs = reference_stds(n)
    std = sum(stds) / len(stds)
    return {
        "series": variant.series, "label": variant.label, "method": variant.method, "hp": variant.hp,
        "options": dict(variant.options), "n": n, "params": variant.params(n),
        "std": std, "std_spread": (max(stds) - min(stds)) / 2 if len(stds) > 1 else 0.0,
        "mean": sum(means) / len(means), "diag_mean": sum(diags) / len(diags),
        **{f"{name}_std": value for name, value in refs.items()}, "std_over_glorot": std / refs["glorot"],
        "note": "",
    }


def run_init_study(variants: list[Variant], dims: list[int], seeds: int = 3,
                   progress: Callable[[Variant, int], None] | None = None) -> list[dict]:
    """Every variant at every dimension; a variant that cannot be built at some N gets a note row."""
    from .approx import one_thread

    with one_thread():
        return _run(variants, dims, seeds, progress)


def _run(variants: list[Variant], dims: list[int], seeds: int,
         progress: Callable[[Variant, int], None] | None) -> list[dict]:
    rows = []
    for variant in variants:
        for n in dims:
            try:
                rows.append(init_stats(variant, n, seeds))
            except ValueError as error:
                rows.append({"series": variant.series, "label": variant.label, "method": variant.method,
                             "hp": variant.hp, "options": dict(variant.options), "n": n, "params": None,
                             "note": f"not built: {error}"})
            if progress is not None:
                progress(variant, n)
    return rows
