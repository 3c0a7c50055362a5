"""A run that validates on the test set (data.kwargs.val_size: 0, the DARTS protocol) says so wherever
its validation error is shown: the run summary and the console's status pane (issue 11)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from console.commands.run import _print_summary
from console.tui.detail import status_text

STATUS = {"state": "finished", "name": "darts", "params": 10, "dense_params": 20, "macs": 1, "dense_macs": 2,
          "final_val_err1": 3.0, "best_val_err1": 2.5, "test_err1": 3.0}


@pytest.mark.parametrize("val_is_test", [True, False])
def test_the_summary_labels_validation_on_the_test_set(val_is_test, capsys, tmp_path):
    _print_summary(SimpleNamespace(path=tmp_path), {**STATUS, "val_is_test": val_is_test}, as_json=False)
    out = capsys.readouterr().out
    assert ("val (= test set)" in out) is val_is_test
    assert "best val" in out.replace(" (= test set)", "")


@pytest.mark.parametrize("val_is_test", [True, False])
def test_the_console_labels_validation_on_the_test_set(val_is_test):
    info = SimpleNamespace(name="darts", run_id="r", path=None, state_shown="finished", state="finished", epoch=1, epochs=1,
                           elapsed_s=1.0, eta_s=None, error=None, last_loss=0.1, best_err1=2.5)
    text = status_text(SimpleNamespace(info=info, status={**STATUS, "val_is_test": val_is_test})).plain
    assert ("val (= test set)" in text) is val_is_test
