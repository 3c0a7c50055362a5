"""What the training loop calls for a run with a ``bayes:`` section (one object, few calls).

  attach(config, model, examples, input_shape, device)  converts the layers (before the optimiser)
  .wrap(objective)       the objective + KL / N          .begin_step(epochs_done)   KL warm-up
  .after_step()          clip_var on the named layers    .blame()   the layer whose log-variance overflowed
  .epoch_metrics()       KL, groups kept per layer, weights kept, the two factors
  .finish(...)           masks, pruned.pt, bayes.json; the summary's compression keys
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from ..errors import UserError
from .convert import bayes_layers, convert
from .objective import BayesObjective
from .precision import FloatFormat, compression
from .prune import (Kept, NotAChain, apply_masks, call_order, export_pruned, group_masks, kept_units,
                    layer_thresholds, rounded)
from .report import (MATCH_TOLERANCE, PRUNED_FILE, REPORT_FILE, baseline_error, layer_table, max_output_gap,
                     save_pruned, write_report)

EXP_OVERFLOW = 88.0  # exp(x) overflows float32 above about 88.7


class BayesRun:
    """The Bayesian layers of one run and the settings of its ``bayes:`` section."""

    def __init__(self, settings: Any, model: nn.Module, examples: int, sample: torch.Tensor) -> None:
        self.settings, self.model, self.examples = settings, model, examples
        self.names = convert(model, settings.layers, settings.skip, settings.init_logvar)
        if not self.names:
            raise UserError(f"bayes.layers is {settings.layers!r} but the model has no such layers to convert",
                            key="bayes.layers", hint="use all, convs or linears to match the model")
        self.layers = bayes_layers(model)
        try:
            self.thresholds = layer_thresholds(settings.thresholds, len(self.layers))
        except ValueError as error:
            raise UserError(str(error), key="bayes.thresholds",
                            hint=f"give one value or {len(self.layers)} (layers: {', '.join(self.names)})") from None
        self.order = call_order(model, sample)
        clip = settings.clip_layers
        self.clipped = [] if settings.clip_var is None else (
            [layer for _, layer in self.layers[:1]] if clip == "first" else [layer for _, layer in self.layers])
        self.objective: BayesObjective | None = None
        # (layer, log-variance) of each entry of _tops: the largest value each held before a step, the
        # last finite one kept - once a NaN step has spread through Adam, every layer is non-finite
        self._watched = [(name, key) for name, layer in self.layers for key in layer.log_variances()]
        self._tops: torch.Tensor | None = None

    def wrap(self, objective: Any) -> BayesObjective:
        self.objective = BayesObjective(objective, [layer for _, layer in self.layers], self.settings.kl_weight,
                                        self.examples, self.settings.warmup_epochs)
        return self.objective

    def begin_step(self, epochs_done: float) -> None:
        if self.objective is not None:
            self.objective.progress = epochs_done
        self._watch()

    @torch.no_grad()
    def _watch(self) -> None:
        """Note each log-variance's maximum before the step (on the device: no sync), keeping the
        last finite value, so :meth:`blame` can name the layer that overflowed after all are NaN."""
        tops = torch.stack([tensor.detach().max().float() for _, layer in self.layers
                            for tensor in layer.log_variances().values()])
        self._tops = tops if self._tops is None else torch.where(torch.isfinite(tops), tops, self._tops)

    def after_step(self) -> None:
        for layer in self.clipped:
            layer.clip_var(self.settings.clip_var)

    @torch.no_grad()
    def blame(self) -> str:
        """'; log-variance overflowed in LAYER (...)' for the NaN message: the layer whose log-variance
        was the largest before the steps (the last finite value), and the layers non-finite now."""
        current = [(float(tensor.nan_to_num(nan=-math.inf).max()), name, key) for name, layer in self.layers
                   for key, tensor in layer.log_variances().items()]
        if self._tops is not None:  # before the steps: afterwards a NaN has reached every layer
            current = [(float(top), name, key) for top, (name, key) in zip(self._tops.cpu(), self._watched)]
        finite = [row for row in current if math.isfinite(row[0]) or row[0] == math.inf]
        broken = [name for name, layer in self.layers
                  if not all(bool(torch.isfinite(p).all()) for p in layer.parameters())]
        if not finite:
            return f"; layers {', '.join(broken)} are not finite" if broken else ""
        top, name, param_name = max(finite)
        verdict = "overflowed" if top > EXP_OVERFLOW else "is the largest"
        now = f"; non-finite parameters now in {', '.join(broken)}" if broken else ""
        return (f"; log-variance {verdict} in layer {name} ({param_name} max {top:.4g}){now}; lower train.lr, "
                f"set train.grad_clip or bayes.clip_var/clip_layers=all")

    @torch.no_grad()
    def kept(self) -> tuple[dict[str, torch.Tensor], list[Kept], str | None]:
        """Masks, kept units per layer, and why the chain could not be followed (None if it could)."""
        masks = group_masks(self.model, self.thresholds)
        try:
            kept = kept_units(self.model, masks, self.order)
            empty = [row.name for row in kept if not (row.keep_in.any() and row.keep_out.any())]
            return masks, kept, (f"layer {empty[0]} keeps no units: the network is pruned away (lower the "
                                 f"thresholds or kl_weight)" if empty else None)
        except NotAChain as error:  # each layer's own groups only: a lower bound on what is removable
            own = []
            for name, layer in self.layers:
                conv = hasattr(layer, "out_channels")
                ones_in = torch.ones(layer.weight_mu.shape[1], dtype=torch.bool, device=masks[name].device)
                ones_out = torch.ones(layer.weight_mu.shape[0], dtype=torch.bool, device=masks[name].device)
                own.append(Kept(name, layer, ones_in if conv else masks[name], masks[name] if conv else ones_out))
            return masks, own, str(error)

    @torch.no_grad()
    def epoch_metrics(self) -> dict[str, float]:
        masks, kept, _ = self.kept()
        comp = compression(kept)
        out = {"kl_end": float(sum(layer.kl() for _, layer in self.layers))}  # "kl": the epoch mean
        for name, mask in masks.items():
            out[f"groups_kept/{name}"] = float(mask.float().mean())
        out.update(weights_kept=comp.kept_weights / comp.dense_weights,
                   compression_architecture=_finite(comp.architecture),
                   compression_precision=_finite(comp.precision))
        return out

    @torch.no_grad()
    def finish(self, run_dir: Path, home: Path, config: dict[str, Any], seed: int,
               evaluate: Callable[[nn.Module], dict[str, float]], test_loader, move: Callable) -> dict[str, Any]:
        """Evaluate the unmasked, masked, pruned and quantised models; write pruned.pt and bayes.json.

        quantised_test_err1 rounds the pruned weights to the float format of their bit widths
        (quantised_format says which), quantised_grid_test_err1 to the tutorial's grid of step 2^-s.

        Leaves ``model`` masked: the loop's final test then measures the masked model (test_err1)."""
        unmasked = evaluate(self.model)
        masks, kept, chain_problem = self.kept()
        apply_masks(self.model, masks)
        masked = evaluate(self.model)
        comp = compression(kept)
        facts: dict[str, Any] = {"unmasked_test_err1": unmasked["err1"], "masked_test_err1": masked["err1"]}
        gap = None
        if chain_problem is None:
            pruned = export_pruned(self.model, kept)
            try:  # a connection the call order cannot see (a residual add) gives shapes that do not fit
                gap = max_output_gap(self.model, pruned, test_loader, move)
            except RuntimeError as error:
                chain_problem = f"the pruned model does not run ({str(error).splitlines()[0]})"
        if chain_problem is None:
            # the float format the bit widths describe (the paper), and the tutorial's absolute grid
            quantised = export_pruned(self.model, kept, {name: f.round for name, f in comp.formats.items()})
            grid = export_pruned(self.model, kept,
                                 {name: partial(rounded, bits=s) for name, s in comp.significand.items()})
            save_pruned(run_dir / PRUNED_FILE, pruned, kept, config)
            facts.update(pruned_test_err1=evaluate(pruned)["err1"], quantised_test_err1=evaluate(quantised)["err1"],
                         quantised_grid_test_err1=evaluate(grid)["err1"], quantised_format=comp.describe(),
                         pruned_max_abs_diff=gap, pruned_matches_masked=gap <= MATCH_TOLERANCE)
        else:
            facts.update(pruned_test_err1=None, quantised_test_err1=None, quantised_grid_test_err1=None,
                         quantised_format=None, pruned_max_abs_diff=None, pruned_matches_masked=None,
                         pruned_problem=chain_problem)
        baseline, baseline_id = baseline_error(home, self.settings.baseline, seed)
        facts.update(compression_architecture=_finite(comp.architecture),
                     compression_precision=_finite(comp.precision),
                     bayes_dense_weights=comp.dense_weights, bayes_kept_weights=comp.kept_weights,
                     dense_baseline_err1=baseline, dense_baseline_run=baseline_id or self.settings.baseline)
        exponent_range = FloatFormat.fitted(0, comp.exponent, comp.largest)
        report = {**facts, "exponent_bits": comp.exponent, "largest_weight": comp.largest,
                  "exponent_range": [exponent_range.emin, exponent_range.emax],
                  "layers": layer_table(kept, masks, self.thresholds, comp),
                  "settings": self.settings.model_dump(mode="json"),
                  "training_examples": self.examples}
        write_report(run_dir / REPORT_FILE, report)
        return facts


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def attach(config: Any, model: nn.Module, examples: int, input_shape: tuple[int, ...],
           device: torch.device) -> BayesRun:
    """Make ``model``'s layers Bayesian as ``config.bayes`` says (call before building the optimiser)."""
    sample = torch.zeros(1, *input_shape, device=device)
    return BayesRun(config.bayes, model, examples, sample)
