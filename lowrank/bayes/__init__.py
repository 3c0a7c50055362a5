"""Bayesian compression (BC-GNJ, Louizos, Ullrich & Welling 2017): group normal-Jeffreys layers.

  kl.py         the KL of the normal-Jeffreys (log-uniform) group prior and of the Gaussian weights
  layers.py     BayesLinear (z per input neuron) and BayesConv2d (z per output channel)
  convert.py    replace a model's convs/linears by Bayesian ones (``bayes.layers``)
  objective.py  CE (+ distillation) + kl_weight * KL / N, N the number of training examples
  prune.py      log-alpha thresholds -> group masks -> kept units per layer -> a physically pruned model
  precision.py  bits per weight from the posterior variance; the two compression factors
  report.py     the end-of-run evaluation (masked, quantised, pruned) and bayes.json
  hook.py       what the training loop calls (convert, clip_var, per-epoch metrics, NaN blame, report)

Imports torch: the loop imports it only when a config has a ``bayes:`` section.
"""
