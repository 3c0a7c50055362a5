"""Readers survive a damaged tune study manifest: ``tune ls`` lists it as unreadable, ``tune
show`` refuses it in one line (exit 2) - before, each case below was a traceback
(AttributeError, TypeError, KeyError, or optuna's error on a missing/garbage storage)."""

from __future__ import annotations

import json

import pytest


EVIL = "\x1b]0;pwned\x07[/bold]\x9b2J"


def manifest(home, **fields) -> dict:
    data = {"study": "tp", "created": "2024-03-01T12:00:00+00:00", "preset": "x.yaml",
            "space": [{"key": "train.lr", "spec": "log:0.001:0.3"}], "metric": "best_val_err1",
            "pruner": {"name": "hyperband"}, "backend": "local", "trials_requested": 2, "epochs": 2,
            "storage": f"journal:{home / 'studies' / 'tp.journal'}", "trials": {}}
    return {**data, **fields}


CASES = [("space-string", {"space": "train.lr"}), ("space-list-of-str", {"space": ["train.lr"]}),
         ("space-no-spec", {"space": [{"key": 1}]}), ("pruner-string", {"pruner": "hyperband"}),
         ("pruner-null", {"pruner": None}), ("trials-list", {"trials": [1, 2]}), ("trials-string", {"trials": "x"}),
         ("trial-entry-list", {"trials": {"0": [1]}}), ("trial-params-list", {"trials": {"0": {"params": [1]}}}),
         ("metric-list", {"metric": [1]}), ("storage-missing", {"storage": None}), ("storage-int", {"storage": 5}),
         ("storage-directory", {"storage": "journal:/"}), ("storage-absent", {}),
         ("storage-garbage", {"_journal": b"garbage\n\xff\n"}), ("epochs-str", {"epochs": "two"}),
         ("metric-markup", {"metric": EVIL, "_journal": b"garbage\n"})]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_tune_readers_survive_a_damaged_manifest(case, lowrank):
    fields = dict(case[1])
    journal = fields.pop("_journal", None)
    studies = lowrank.home / "studies"
    studies.mkdir(parents=True)
    (studies / "tp.json").write_text(json.dumps(manifest(lowrank.home, **fields)))
    if journal is not None:
        (studies / "tp.journal").write_bytes(journal)
    code, out, _ = lowrank("tune", "ls")
    assert code == 0 and "tp" in out
    code, out, _ = lowrank("tune", "ls", "--json")
    assert code == 0 and [row["study"] for row in json.loads(out)] == ["tp"]
    for reader in (["tune", "show", "tp"], ["tune", "show", "last", "--json"]):
        code, out, err = lowrank(*reader)
        assert code == 2, (reader, code, err)
        assert len(err.strip().splitlines()) == 1 and "tp" in err, err
