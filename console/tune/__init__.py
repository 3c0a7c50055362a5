"""``lowrank tune``: hyperparameter search with Optuna, each trial an ordinary run through the queue.

  space.py     ``KEY=SPEC`` search spaces (log/float/int/cat), checked before anything exists
  study.py     study manifests and storage under ``$LOWRANK_HOME/studies/``; names, ``last``
  backends.py  how a trial's run is launched: the scheduler (local) or a cluster backend
  driver.py    the ask -> run -> tell loop (``--parallel K`` trials in flight), resume
  report.py    ``tune show``: best trial, trials table, importance, plotext plots
  listing.py   studies and their trials from manifests + run statuses (no optuna, no torch:
               the console's fast path)

The worker's side (report each evaluation, stop as ``pruned``) is :mod:`lowrank.trial`.
"""
