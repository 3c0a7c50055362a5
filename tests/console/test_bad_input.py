"""Bad input is refused before anything is created: one line (file, key, expected, hint), exit 2.

Each case goes through the real ``lowrank`` entry point (``console.cli.main``) with a private
LOWRANK_HOME, and must print exactly one ``error: ...; hint: ...`` line naming the file
(or ``--set`` / the flag) and the key, exit 2, print no traceback, and leave LOWRANK_HOME as
it was. The last group are the checks the worker used to make only after its run directory
existed (unreachable budget, CUDA, GPUs, teacher, dataset files); they run for the
foreground ``run`` and for ``run --detach``, and for the console's subprocess precheck.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from console.cli import main

QUICK = (Path(__file__).resolve().parents[2] / "presets" / "quickstart.yaml").as_posix()


def base(extra: str = "") -> str:
    return f"base: {QUICK}\n{extra}"


def alias_bomb(levels: int = 8, indent: str = "") -> str:
    """A few hundred bytes of YAML anchors/aliases that expand to 10**(levels+1) values
    (mappings, which the preset merge walks key by key)."""
    lines = [f"{indent}l0: &l0 {{" + ", ".join(f"k{i}: 1" for i in range(10)) + "}"]
    lines += [f"{indent}l{d}: &l{d} {{" + ", ".join(f"k{i}: *l{d - 1}" for i in range(10)) + "}"
              for d in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def flow_alias_bomb(levels: int = 8) -> str:
    """The same bomb as one flow-style YAML value (for --set)."""
    parts = ["l0: &l0 {" + ", ".join(f"k{i}: 1" for i in range(10)) + "}"]
    parts += [f"l{d}: &l{d} {{" + ", ".join(f"k{i}: *l{d - 1}" for i in range(10)) + "}" for d in range(1, levels + 1)]
    return "{" + ", ".join(parts) + "}"


# (id, preset text or bytes or a callable(tmp) -> path, --set overrides, expected file part, expected key part)
PRESET_CASES = [
    ("binary", b"\x7fELF\x02\x01\x01\x00\x00\x00", [], "preset.yaml", ""),
    ("latin1", "name: caf\xe9\n".encode("latin-1"), [], "preset.yaml", ""),
    ("empty", "", [], "preset.yaml", ""),
    ("only-comments", "# nothing here\n\n", [], "preset.yaml", ""),
    ("top-level-list", "- name: x\n", [], "preset.yaml", ""),
    ("top-level-scalar", "just words\n", [], "preset.yaml", ""),
    ("bad-yaml", "name: x\n  train: {epochs: 3\n", [], "preset.yaml", ""),
    ("tab-indent", "train:\n\tepochs: 3\n", [], "preset.yaml", ""),
    ("unknown-top-key", base("colour: blue\n"), [], "preset.yaml", "colour"),
    ("unknown-nested-key", base("model:\n  colour: blue\n"), [], "preset.yaml", "model.colour"),
    ("section-is-string", base("train: fast\n"), [], "preset.yaml", "train"),
    ("section-is-list", base("data: [1, 2]\n"), [], "preset.yaml", "data"),
    ("base-missing", "base: nowhere.yaml\n", [], "nowhere.yaml", ""),
    ("base-not-string", "base: [a, b]\n", [], "preset.yaml", "base"),
    ("base-is-directory", "base: .\n", [], "", ""),
    ("lr-inf-in-file", base("train: {lr: .inf}\n"), [], "preset.yaml", "train.lr"),
    ("lr-nan-in-file", base("train: {lr: .nan}\n"), [], "preset.yaml", "train.lr"),
    ("name-empty", base("name: ''\n"), [], "preset.yaml", "name"),
    ("alias-bomb-unknown-key", base("junk:\n" + alias_bomb(indent="  ")), [], "preset.yaml", ""),
    ("alias-bomb-model-kwargs", base("model:\n  kwargs:\n" + alias_bomb(indent="    ")), [], "preset.yaml", ""),
    ("python-tag", base("train: {lr: !!python/object/apply:os.system ['true']}\n"), [], "preset.yaml", ""),
]

OVERRIDE_CASES = [
    ("set-no-equals", ["train.epochs"], "--set", ""),
    ("set-empty-key", [".x=1"], "--set", ""),
    ("set-into-scalar", ["name.x=1"], "--set", "name.x"),
    ("lr-dot-inf", ["train.lr=.inf"], "--set", "train.lr"),
    ("lr-1e400", ["train.lr=1e400"], "--set", "train.lr"),
    ("lr-1.0e400", ["train.lr=1.0e+400"], "--set", "train.lr"),
    ("lr-negative", ["train.lr=-0.1"], "--set", "train.lr"),
    ("lr-string", ["train.lr=fast"], "--set", "train.lr"),
    ("epochs-zero", ["train.epochs=0"], "--set", "train.epochs"),
    ("epochs-huge", ["train.epochs=1000000000"], "--set", "train.epochs"),
    ("epochs-float", ["train.epochs=2.5"], "--set", "train.epochs"),
    ("batch-zero", ["data.batch_size=0"], "--set", "data.batch_size"),
    ("batch-huge", ["data.batch_size=100000000"], "--set", "data.batch_size"),
    ("eval-batch-huge", ["data.eval_batch_size=100000000"], "--set", "data.eval_batch_size"),
    ("seed-negative", ["train.seed=-1"], "--set", "train.seed"),
    ("seed-2e13", ["train.seed=20000000000000"], "--set", "train.seed"),
    ("momentum-one", ["train.momentum=1.0"], "--set", "train.momentum"),
    ("weight-decay-negative", ["train.weight_decay=-1"], "--set", "train.weight_decay"),
    ("weight-decay-inf", ["train.weight_decay=.inf"], "--set", "train.weight_decay"),
    ("grad-clip-nan", ["train.grad_clip=.nan"], "--set", "train.grad_clip"),
    ("optimizer-unknown", ["train.optimizer=lbfgs"], "--set", "train.optimizer"),
    ("device-unknown", ["train.device=tpu"], "--set", "train"),
    ("nesterov-adam", ["train.optimizer=adam", "train.nesterov=true"], "--set", "train"),
    ("multistep-no-milestones", ["train.schedule.name=multistep"], "--set", "train.schedule"),
    ("milestones-decreasing", ["train.schedule.milestones=[5, 2]"], "--set", "train.schedule"),
    ("piecewise-mismatch", ["train.schedule.name=piecewise", "train.schedule.epochs=[0, 1]",
                            "train.schedule.values=[1]"], "--set", "train.schedule"),
    ("label-smoothing-one", ["train.label_smoothing=1"], "--set", "train.label_smoothing"),
    ("amp-unknown", ["train.amp=fp8"], "--set", "train.amp"),
    ("betas-one-value", ["train.betas=[0.9]"], "--set", "train.betas"),
    ("model-unknown", ["model.name=vgg99"], "--set", "model.name"),
    ("model-kwarg-unknown", ["model.kwargs.colour=blue"], "--set", "model.kwargs.colour"),
    ("model-kwarg-reserved", ["model.kwargs.num_classes=3"], "--set", "model.kwargs.num_classes"),
    ("data-unknown", ["data.name=svhn"], "--set", "data.name"),
    ("data-kwarg-unknown", ["data.kwargs.colour=blue"], "--set", "data.kwargs.colour"),
    ("workers-negative", ["data.workers=-1"], "--set", "data.workers"),
    ("cutout-negative", ["data.augment.cutout=-1"], "--set", "data.augment.cutout"),
    ("method-unknown", ["substitute.method=magic"], "--set", "substitute.method"),
    ("method-option-unknown", ["substitute.method=acdc", "substitute.hp=2", "substitute.options.colour=1"],
     "--set", "substitute.options.colour"),
    ("hp-and-budget", ["substitute.method=generic", "substitute.hp=0.5", "substitute.budget=0.1"],
     "--set", "substitute"),
    ("budget-above-one", ["substitute.method=generic", "substitute.budget=2"], "--set", "substitute.budget"),
    ("budget-zero", ["substitute.method=generic", "substitute.budget=0"], "--set", "substitute.budget"),
    ("method-needs-hp", ["substitute.method=generic"], "--set", "substitute"),
    ("hp-out-of-range", ["substitute.method=generic", "substitute.hp=5"], "--set", "substitute.hp"),
    ("dense-with-hp", ["substitute.method=dense", "substitute.hp=0.5"], "--set", "substitute.hp"),
    ("distill-without-teacher", ["distill.alpha=0.5"], "--set", "distill"),
    ("teacher-empty", ["teacher.checkpoint=''"], "--set", "teacher.checkpoint"),
    ("teacher-model-unknown", ["teacher.checkpoint=x.pt", "teacher.model.name=vgg99", "distill.alpha=0.5"],
     "--set", "teacher.model.name"),
    ("distill-and-imitation", ["teacher.checkpoint=x.pt", "distill.alpha=0.5",
                               "imitation.stages=[{name: block, epochs: 1}]"], "--set", "imitation"),
    ("imitation-order", ["teacher.checkpoint=x.pt", "imitation.stages=[{name: output, epochs: 1}, "
                                                    "{name: block, epochs: 1}]"], "--set", "imitation.stages"),
    ("imitation-epochs-mismatch", ["teacher.checkpoint=x.pt", "train.epochs=7",
                                   "imitation.stages=[{name: block, epochs: 1}]"], "--set", "train.epochs"),
    ("stage-missing-epochs", ["teacher.checkpoint=x.pt", "imitation.stages=[{name: block}]"],
     "--set", "imitation.stages.0.epochs"),
    ("gpu-ids-duplicate", ["resources.gpu_ids=[0, 0]"], "--set", "resources"),
    ("gpus-vs-gpu-ids", ["resources.gpus=2", "resources.gpu_ids=[0]"], "--set", "resources"),
    ("gpus-negative", ["resources.gpus=-1"], "--set", "resources.gpus"),
    ("eval-every-zero", ["log.eval_every=0"], "--set", "log.eval_every"),
    ("min-free-memory-inf", ["resources.min_free_memory_gb=.inf"], "--set", "resources.min_free_memory_gb"),
    ("drop-path-one", ["train.drop_path_max=1"], "--set", "train.drop_path_max"),
    ("alias-bomb-set", [f"model.kwargs.x={flow_alias_bomb()}"], "--set", "model.kwargs.x"),
    ("alias-bomb-set-milestones", [f"train.schedule.milestones={flow_alias_bomb()}"], "--set",
     "train.schedule.milestones"),
    ("python-tag-set", ["train.lr=!!python/name:os.system"], "--set", "train.lr"),
]


def snapshot(home: Path) -> set[str]:
    return {str(path.relative_to(home)) for path in home.rglob("*")} if home.exists() else set()


@pytest.fixture
def lowrank(tmp_path, monkeypatch, capsys):
    """Call the real entry point; returns (exit code, stdout, stderr); asserts nothing changed at home."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("LOWRANK_HOME", str(home))
    monkeypatch.chdir(tmp_path)

    def call(*args: str) -> tuple[int, str, str]:
        before = snapshot(home)
        monkeypatch.setattr(sys, "argv", ["lowrank", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out, err = capsys.readouterr()
        assert snapshot(home) == before, f"{args}: something was created under LOWRANK_HOME"
        return exit_info.value.code, out, err

    call.home = home
    return call


def assert_refused(result, file_part: str, key_part: str) -> str:
    code, out, err = result
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error: ") and "; hint: " in line, line
    assert "Traceback" not in out + err
    assert file_part in line.split("; hint: ")[0], line
    assert key_part in line, line
    return line


def write_preset(tmp_path: Path, content) -> Path:
    path = tmp_path / "preset.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", PRESET_CASES, ids=[case[0] for case in PRESET_CASES])
def test_bad_preset_file_is_refused(case, tmp_path, lowrank):
    _, content, overrides, file_part, key_part = case
    preset = write_preset(tmp_path, content)
    assert_refused(lowrank("run", str(preset), *(f"--set={o}" for o in overrides)), file_part, key_part)


@pytest.mark.parametrize("case", OVERRIDE_CASES, ids=[case[0] for case in OVERRIDE_CASES])
def test_bad_override_is_refused(case, tmp_path, lowrank):
    _, overrides, file_part, key_part = case
    preset = write_preset(tmp_path, base())
    args = [arg for override in overrides for arg in ("--set", override)]
    assert_refused(lowrank("run", str(preset), *args), file_part, key_part)


def test_missing_and_directory_presets(tmp_path, lowrank):
    assert_refused(lowrank("run", str(tmp_path / "nope.yaml")), "nope.yaml", "")
    (tmp_path / "folder.yaml").mkdir()
    line = assert_refused(lowrank("run", str(tmp_path / "folder.yaml")), "folder.yaml", "")
    assert "directory" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_preset(tmp_path, lowrank):
    preset = write_preset(tmp_path, base())
    preset.chmod(0)
    try:
        assert "cannot read" in assert_refused(lowrank("run", str(preset)), "preset.yaml", "")
    finally:
        preset.chmod(0o644)


def test_cpu_with_gpus_leaves_no_queued_orphan(tmp_path, lowrank):
    preset = write_preset(tmp_path, base())
    for flags in (["--cpu", "--gpus", "1"], ["--detach", "--cpu", "--gpus", "1"], ["--detach", "--cpu", "--gpu", "0"]):
        assert_refused(lowrank("run", str(preset), *flags), "", "--cpu")
    assert not (lowrank.home / "runs").exists()


# ---------------------------------------------------------------- checked up front, not in the worker

def _teacher_state_dict(path: Path, width: int) -> Path:
    import torch

    from lowrank.models import create_model

    torch.save(create_model("tiny_convnet", num_classes=10, in_channels=1, width=width).state_dict(), path)
    return path


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _gpu_count() -> int:
    from console.gpus import read_gpus

    return len(read_gpus()[0])


def worker_cases(tmp_path: Path, home: Path) -> list[tuple[str, list[str], list[str], str, str]]:
    """(id, --set overrides, extra flags, expected file part, expected key part)."""
    teacher_run = home / "runs" / "20240101-000000-teacher-aaaa"
    teacher_run.mkdir(parents=True)
    (teacher_run / "config.yaml").write_text("name: teacher\n")
    (teacher_run / "status.json").write_text('{"state": "finished", "run_id": "20240101-000000-teacher-aaaa"}')
    text_teacher = tmp_path / "teacher.txt"
    text_teacher.write_text("not a checkpoint\n")
    wide = _teacher_state_dict(tmp_path / "wide.pt", 16)
    distill = ["distill.alpha=0.5"]
    cases = [
        ("budget-unreachable", ["substitute.method=generic", "substitute.budget=0.00001"], [], "--set",
         "substitute.budget"),
        ("teacher-missing-file", [f"teacher.checkpoint={tmp_path / 'none.pt'}", *distill], [], "--set",
         "teacher.checkpoint"),
        ("teacher-run-without-checkpoint", ["teacher.checkpoint=20240101-000000-teacher-aaaa", *distill], [], "",
         "teacher.checkpoint"),
        ("teacher-text-file", [f"teacher.checkpoint={text_teacher}", *distill], [], "teacher.txt", "teacher"),
        ("teacher-mismatched", [f"teacher.checkpoint={wide}", "teacher.model.name=tiny_convnet",
                                "teacher.model.kwargs.width=8", *distill], [], "wide.pt", "teacher"),
        ("cifar10-absent", ["data.name=cifar10", f"data.root={tmp_path / 'data'}"], [], "--set", "data.root"),
        ("mnist-absent", ["data.name=mnist", f"data.root={tmp_path / 'data'}"], [], "--set", "data.root"),
        ("imagenet-absent", ["data.name=imagenet", f"data.root={tmp_path / 'data'}"], [], "--set", "data.root"),
        ("cpu-device-with-gpus", ["train.device=cpu"], ["--gpus", "1"], "", "train.device"),
    ]
    if not _has_cuda():
        cases += [("cuda-without-cuda", ["train.device=cuda"], [], "--set", "train.device"),
                  ("cuda-index-without-cuda", ["train.device=cuda:1"], [], "--set", "train.device")]
    if _gpu_count() < 8:
        cases += [("gpu-7-absent", [], ["--gpu", "7"], "", "--gpu"),
                  ("gpus-too-many", [], ["--gpus", "8"], "", "--gpus"),
                  ("gpu-ids-absent", ["resources.gpu_ids=[7]"], [], "--set", "resources.gpu_ids")]
    return cases


WORKER_IDS = ["budget-unreachable", "teacher-missing-file", "teacher-run-without-checkpoint", "teacher-text-file",
              "teacher-mismatched", "cifar10-absent", "mnist-absent", "imagenet-absent", "cpu-device-with-gpus",
              "cuda-without-cuda", "cuda-index-without-cuda", "gpu-7-absent", "gpus-too-many", "gpu-ids-absent"]


@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detach"])
@pytest.mark.parametrize("case_id", WORKER_IDS)
def test_worker_checks_run_before_the_run_exists(case_id, detach, tmp_path, lowrank):
    cases = {case[0]: case for case in worker_cases(tmp_path, lowrank.home)}
    if case_id not in cases:
        pytest.skip("this host has that hardware")
    _, overrides, flags, file_part, key_part = cases[case_id]
    preset = write_preset(tmp_path, base())
    args = [arg for override in overrides for arg in ("--set", override)]
    assert_refused(lowrank("run", str(preset), *args, *flags, *(["--detach"] if detach else [])), file_part, key_part)
    assert not any(path.name.startswith("2026") or path.name.startswith("2025")
                   for path in (lowrank.home / "runs").iterdir())


@pytest.mark.slow
@pytest.mark.subprocess
def test_console_precheck_subprocess_refuses_the_same(tmp_path, monkeypatch):
    """The console's path: ``python -m console.precheck`` in a child, the same UserError back."""
    from console.precheck import check_in_subprocess
    from lowrank.errors import UserError

    home = tmp_path / "home"
    monkeypatch.setenv("LOWRANK_HOME", str(home))
    preset = write_preset(tmp_path, base())
    with pytest.raises(UserError) as refused:
        check_in_subprocess(preset, ["substitute.method=generic", "substitute.budget=0.00001"], home=home)
    assert refused.value.key == "substitute.budget" and refused.value.file == "--set" and refused.value.hint
    with pytest.raises(UserError) as refused:
        check_in_subprocess(preset, ["train.lr=.inf"], home=home)
    assert refused.value.key == "train.lr"
    facts = check_in_subprocess(preset, [], home=home, cpu=True)
    assert facts["ok"] and facts["params"] > 0
    assert not home.exists()


def test_methods_does_not_advertise_a_default_hp(lowrank):
    code, out, _ = lowrank("methods")
    assert code in (0, None)
    generic = next(line for line in out.splitlines() if "rank_fraction" in line)
    assert "default" not in generic and "set substitute.hp or substitute.budget" in generic


@pytest.mark.parametrize("overrides, key", [(["train.device=cuda"], "train.device"),
                                            (["data.name=cifar10", "data.root=/nonexistent/data"], "data.root"),
                                            (["teacher.checkpoint=/nonexistent/t.pt", "distill.alpha=0.5"],
                                             "teacher.checkpoint")])
def test_compare_launch_runs_the_same_up_front_checks(overrides, key, tmp_path, lowrank):
    if key == "train.device" and _has_cuda():
        pytest.skip("this host has CUDA")
    preset = write_preset(tmp_path, base())
    args = [arg for override in overrides for arg in ("--set", override)]
    assert_refused(lowrank("compare", str(preset), "--methods", "generic", "--budgets", "0.1", "--detach", "--json",
                           *args), "--set", key)


@pytest.mark.parametrize("args, key", [
    (["--seeds", "100000000"], "--seeds"),
    (["--grid", "train.lr=" + ",".join(str(0.001 * i) for i in range(1, 301)),
      "--grid", "train.weight_decay=" + ",".join(str(1e-6 * i) for i in range(1, 301))], "--grid"),
])
def test_a_sweep_too_large_to_be_meant_is_refused_before_planning(args, key, tmp_path, lowrank):
    """--seeds 100000000 or two 300-value grids (810k runs) used to plan for minutes (issue 10 probe)."""
    preset = write_preset(tmp_path, base())
    line = assert_refused(lowrank("compare", str(preset), "--methods", "generic,tt", "--budgets", "0.1,0.2",
                                  "--dry-run", *args), "", key)
    assert "runs" in line
