"""dense_baseline_err1: the baseline's row in results.csv, also when --set train.seed=N named it."""

from __future__ import annotations

from lowrank.bayes.report import baseline_error
from lowrank.rundir import RESULTS_FILE

HEADER = "run_id,name,state,seed,test_err1\n"


def test_baseline_is_found_under_the_name_a_seed_override_gives(tmp_path):
    (tmp_path / RESULTS_FILE).write_text(HEADER + "a,dense,finished,0,2.5\n"
                                         "b,dense seed=1,finished,1,3.5\n"
                                         "c,dense lr=0.1,finished,1,9.0\n"  # another experiment: not the baseline
                                         "d,dense seed=2,finished,1,8.0\n")  # its seed column disagrees
    assert baseline_error(tmp_path, "dense", 0) == (2.5, "a")
    assert baseline_error(tmp_path, "dense", 1) == (3.5, "b")
    assert baseline_error(tmp_path, "dense", 2) == (None, None)
