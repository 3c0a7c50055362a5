"""Deployment: the network that ships, its measured speed, and its export.

- :mod:`.deployable` turns a preset or a finished run into the network a user deploys (eval
  mode, training-only modules removed, a Bayesian run's physically pruned model, the run's best
  weights) beside the dense network of the same preset; used by everything below.
- :mod:`.timing` is the one interleaved timer (``torch.utils.benchmark``, median and IQR).
- :mod:`.latency` measures whole networks (``lowrank bench model``, ``bench.after_run``).
- :mod:`.export` writes ONNX (the dynamo exporter) and pt2 (``torch.export``) files and checks
  that they compute what the eager network computes.
- :mod:`.layers` is the single-layer benchmark (``lowrank bench layers``).

Importing this package is cheap; torch loads with the submodules.
"""
