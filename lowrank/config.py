"""The experiment schema and its loader: YAML preset -> one validated object.

A preset may say ``base: other.yaml`` (resolved relative to the preset; merged
recursively, the child wins, lists are replaced whole) and the command line may add
``--set key.path=value`` overrides whose values are parsed as YAML. Every key is
checked: unknown keys, wrong types, missing files and ``base:`` cycles give one
:class:`~lowrank.errors.ConfigError` naming the file that set the key, the key path and
what was expected. Loading has no side effects, so a bad preset creates nothing.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import safe_yaml
from .errors import ConfigError

OVERRIDE_SOURCE = "--set"

# Upper bounds that keep a typo from starting a run that can never finish or overflows:
# the loader seeds epoch e with seed * 1_000_003 + e, which must fit in 64 bits, and numpy
# takes 32-bit seeds (an audit found a seed >= 2e13 overflowing the loader seeding).
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1 << 20
MAX_SEED = 2**32 - 1


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    # allow_inf_nan=False: `lr: .inf` or `1e400` (YAML reads both as infinity) is refused
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(Section):
    """Which network to build (a name in the model registry) and its builder's kwargs."""

    name: str = "tiny_convnet"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class AugmentConfig(Section):
    """Training-time augmentation; evaluation never augments."""

    random_crop: bool = False  # pad-and-crop by `crop_padding` pixels (CIFAR: 4)
    crop_padding: int = Field(4, ge=0)
    flip: bool = False  # horizontal flip with probability 1/2
    cutout: int = Field(0, ge=0)  # side of the zeroed square (DeVries & Taylor 2017); 0 = off


class DataConfig(Section):
    """Dataset, loader and augmentation settings."""

    name: str = "digits"
    root: str = "~/.lowrank/data"
    download: bool = False  # torchvision datasets only download when this is true
    batch_size: int = Field(64, ge=1, le=MAX_BATCH_SIZE)
    eval_batch_size: int | None = Field(None, ge=1, le=MAX_BATCH_SIZE)
    workers: int = Field(0, ge=0)
    pin_memory: bool = True  # only takes effect on CUDA
    device: str | None = None  # keep the dataset on the training device and augment batches there (in-memory and
    #   uint8 torchvision datasets): "cuda" for small models bound by DataLoader workers; None: the DataLoader

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value is not None and value not in ("cpu", "cuda") and not value.startswith("cuda:"):
            raise ValueError(f"device must be cpu, cuda or cuda:N (or unset), not {value!r}")
        return value
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    kwargs: dict[str, Any] = Field(default_factory=dict)  # dataset-specific, checked against the loader


class SubstituteConfig(Section):
    """Which convolutions to replace, by which method, at which hyperparameter or budget."""

    method: str = "dense"
    hp: float | None = None  # the method's hyperparameter; or give a budget and let the solver choose
    budget: float | None = Field(None, gt=0, le=1)  # fraction of the dense network's parameters
    budget_params: int | None = Field(None, gt=0)  # absolute parameter target
    skip: list[str] = Field(default_factory=lambda: ["@stem", "@shortcut"])
    options: dict[str, Any] = Field(default_factory=dict)
    scale_weight_decay: bool = True  # weight decay x (compressed / dense params) per substituted layer

    @model_validator(mode="after")
    def _one_target(self) -> "SubstituteConfig":
        given = [name for name in ("hp", "budget", "budget_params") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of hp, budget, budget_params (got {', '.join(given)})")
        return self


class ScheduleConfig(Section):
    """Learning-rate schedule, evaluated per step at the fractional epoch.

    cosine: lr * (min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi t / T)) / 2);
    multistep: lr * gamma ** (number of milestones passed);
    piecewise: linear interpolation of `values` (multipliers of lr) at `epochs` knots
    (the DAWNBench ResNet-9 schedule is epochs [0, 5, 24], values [0, 1, 0]);
    constant: lr. An optional linear warmup from 0 over `warmup_epochs` applies first.
    """

    name: Literal["cosine", "multistep", "piecewise", "constant"] = "cosine"
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0)
    epochs: list[float] = Field(default_factory=list)
    values: list[float] = Field(default_factory=list)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    warmup_epochs: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> "ScheduleConfig":
        if self.name == "multistep" and not self.milestones:
            raise ValueError("multistep needs milestones, e.g. [60, 120, 160]")
        if self.milestones != sorted(self.milestones):
            raise ValueError("milestones must be increasing")
        if self.name == "piecewise":
            if len(self.epochs) < 2 or len(self.epochs) != len(self.values):
                raise ValueError("piecewise needs epochs and values of the same length (at least 2 knots)")
            if self.epochs != sorted(self.epochs):
                raise ValueError("piecewise epochs must be increasing")
        return self


class TrainConfig(Section):
    """Optimisation: optimizer, schedule, regularisation, seed and device."""

    epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    grad_clip: float | None = Field(None, gt=0)  # max global gradient norm
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = True  # deterministic algorithms (exact resume on CPU)
    drop_path_max: float = Field(0.0, ge=0, lt=1)  # drop-path prob. max * (epoch - 1) / epochs in epoch 1.. (DARTS)
    aux_weight: float = Field(0.0, ge=0)  # weight of the auxiliary head's CE (models returning (logits, aux))
    amp: Literal["off", "bf16", "fp16", "auto"] = "off"  # autocast on CUDA; CPU: bf16 autocast, fp16 refused;
    #   auto: bf16 on a CUDA device that supports it, off on the CPU (the presets where bf16 is known safe)
    channels_last: Literal[True, False, "auto"] = False  # NHWC model and batches on CUDA; no-op on the CPU (auto = on)
    accumulate: int = Field(1, ge=1)  # micro-batches per step: each batch is split, gradients summed (BN sees chunks)
    compile: bool = False  # torch.compile the student for training and evaluation (first steps are slow)
    sync_bn: bool = False  # data-parallel runs (resources.nproc > 1): BatchNorm statistics over the global batch

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        if self.nesterov and self.optimizer != "sgd":
            raise ValueError("nesterov applies to optimizer: sgd only")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self


class TeacherModelConfig(ModelConfig):
    """The teacher's architecture: as ModelConfig, but the name is required (no silent default)."""

    name: str  # a name in the model registry


class TeacherConfig(Section):
    """A trained network to learn from (distillation, imitation); checked at run time, not here."""

    checkpoint: str = Field(min_length=1)  # a .pt path (absolute or relative to the worker's cwd) or a run id
    model: TeacherModelConfig | None = None  # its architecture; None: the config saved in our checkpoints
    verify: bool = True  # evaluate the teacher's own test error at start (event "teacher", status teacher_err1)


class DistillConfig(Section):
    """Knowledge distillation plus attention transfer (see lowrank.distill for the conventions)."""

    temperature: float = Field(4.0, gt=0)  # softmax temperature T of the KD term
    alpha: float = Field(0.9, ge=0, le=1)  # loss = alpha * KD + (1 - alpha) * CE + AT
    at_beta: float = Field(0.0, ge=0)  # attention-transfer beta (AT paper: 1e3); 0 = no AT
    student_taps: list[str] | None = None  # AT taps of the student; None: the model's tap_names
    teacher_taps: list[str] | None = None  # AT taps of the teacher; None: the teacher's tap_names


class StageConfig(Section):
    """One stage of layer-wise imitation; unset optimiser fields fall back to `train`."""

    name: Literal["block", "output", "finetune"]  # block: MSE per block; output: KL to the teacher; finetune: CE
    epochs: int = Field(ge=1, le=MAX_EPOCHS)  # epochs of this stage (the stages' sum is the run's train.epochs)
    optimizer: Literal["sgd", "adam", "adamw"] | None = None  # default train.optimizer
    lr: float | None = Field(None, gt=0)  # default train.lr
    weight_decay: float | None = Field(None, ge=0)  # default train.weight_decay (Go Wide stage 1: 0)
    schedule: ScheduleConfig | None = None  # over this stage's epochs; default train.schedule


class ImitationConfig(Section):
    """Go Wide, Then Narrow (Zhou et al. 2020): the stages run in order, each with a fresh optimiser."""

    stages: list[StageConfig] = Field(min_length=1)  # e.g. block 10, output 50, finetune 30 epochs
    temperature: float = Field(1.0, gt=0)  # of the stage-2 KL on softened outputs
    teacher_forcing: bool = True  # stage 1 feeds block k the teacher's block k-1 output (paper); false for DARTS
    student_taps: list[str] | None = None  # the student's blocks; None: its tap_names
    teacher_taps: list[str] | None = None  # the teacher's blocks; None: its tap_names

    @field_validator("stages")
    @classmethod
    def _order(cls, stages: list[StageConfig]) -> list[StageConfig]:
        names = [stage.name for stage in stages]
        order = {"block": 0, "output": 1, "finetune": 2}
        if len(set(names)) != len(names) or names != sorted(names, key=order.__getitem__):
            raise ValueError(f"stages must be distinct and in the order block, output, finetune (got {names})")
        return stages


class BayesConfig(Section):
    """Bayesian compression, BC-GNJ (Louizos, Ullrich & Welling 2017; lowrank.bayes).

    The chosen layers get Gaussian weights and a group scale z with a normal-Jeffreys prior (per
    input neuron of a linear layer, per output channel of a convolution); the loss adds
    kl_weight * KL / N, N the number of training examples. At the end groups with log alpha below
    the threshold are kept, the network is pruned and its bit widths are read off the posterior.
    """

    layers: Literal["all", "convs", "linears"] = "all"  # which nn.Conv2d / nn.Linear layers become Bayesian
    skip: list[str] = Field(default_factory=list)  # module names (fnmatch patterns) left dense
    kl_weight: float = Field(1.0, gt=0, le=1e3)  # 1 = the ELBO; <1 tempers the KL
    warmup_epochs: float = Field(0.0, ge=0, le=MAX_EPOCHS)  # KL weight ramps linearly from 0 over these epochs
    clip_var: float | None = Field(0.04, gt=0, le=1e3)  # max posterior weight variance (tutorial: 0.04, first layer)
    clip_layers: Literal["first", "all"] = "first"  # the layers clip_var applies to (tutorial: the first)
    thresholds: float | list[float] = -3.0  # log alpha below this keeps a group; one value or one per layer
    init_logvar: float = Field(-9.0, ge=-30, le=0)  # initial log-variances of weights and z (tutorial: -9)
    baseline: str | None = None  # name of the dense run to compare with (its test_err1, same seed, from results.csv)

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if not values or any(not -20 <= v <= 20 for v in values):
            raise ValueError("thresholds must be log alpha values between -20 and 20 (tutorial: -2.8, -3, -5)")
        return value


class LogConfig(Section):
    """How often the worker evaluates, checkpoints and reports progress."""

    eval_every: int = Field(1, ge=1)  # epochs between validation passes (the last epoch always evaluates)
    checkpoint_every: int = Field(1, ge=1)  # epochs between checkpoints (the last epoch always saves)
    step_every: int = Field(10, ge=1)  # steps between progress events in metrics.jsonl
    tensorboard: bool = False  # also write TensorBoard event files into RUN_DIR/tensorboard (optional extra)


class BenchConfig(Section):
    """Measured latency of the finished run's deployable network, recorded with its results (lowrank.deploy)."""

    after_run: bool | None = None  # time it at the run's end; None: off for `lowrank run`, on for compare sweeps
    batch: int | None = Field(None, ge=1, le=MAX_BATCH_SIZE)  # the throughput batch; None: data.batch_size
    repeat: int = Field(7, ge=1, le=100)  # interleaved timed rounds (median)


class ResourcesConfig(Section):
    """What the run needs from the host; the scheduler starts it when that is free."""

    gpus: int | None = Field(None, ge=0)  # None: one GPU if the host has any, else the CPU; 0: CPU
    min_free_memory_gb: float = Field(0.0, ge=0)
    share: bool = False  # may start on a GPU another of our runs holds
    gpu_ids: list[int] | None = None  # pin to these GPU indices
    nproc: int = Field(1, ge=1, le=1024)  # data-parallel processes (torchrun ranks) per node; data.batch_size is global
    backend: Literal["local", "slurm"] = "local"  # where the worker runs: local (this host) or slurm (the `slurm:` section)

    @model_validator(mode="after")
    def _consistent(self) -> "ResourcesConfig":
        if self.gpu_ids is not None:
            if not self.gpu_ids or len(set(self.gpu_ids)) != len(self.gpu_ids):
                raise ValueError("gpu_ids must be distinct and non-empty")
            if self.gpus is not None and self.gpus != len(self.gpu_ids):
                raise ValueError(f"gpus={self.gpus} but gpu_ids names {len(self.gpu_ids)} GPU(s)")
        return self


class SlurmConfig(Section):
    """How a ``resources.backend: slurm`` run is submitted (submitit's ``slurm_*`` parameters)."""

    partition: str | None = None
    time: int = Field(60, ge=1)  # minutes; the worker checkpoints on the signal before the limit and is requeued
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int | None = Field(None, ge=1)
    mem: str | None = None  # e.g. 16G
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = Field(64, ge=1)  # compare sweeps: how many array tasks run at once
    signal_delay_s: int = Field(120, ge=1)  # seconds before the time limit Slurm signals the worker (at most (time*60-30)/2)
    max_requeues: int = Field(3, ge=0)  # preemptions/time limits survived by requeueing from the checkpoint
    extra: dict[str, Any] = Field(default_factory=dict)  # further sbatch options, e.g. {exclude: node3}


class ExperimentConfig(Section):
    """One experiment, exactly as it runs; saved resolved in the run directory."""

    name: str = Field("experiment", min_length=1)
    description: str = ""
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    substitute: SubstituteConfig = Field(default_factory=SubstituteConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)  # latency measured after the run (bench.after_run)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)  # used when resources.backend is slurm
    teacher: TeacherConfig | None = None  # needed by distill and imitation
    distill: DistillConfig | None = None  # KD + AT from the teacher
    imitation: ImitationConfig | None = None  # layer-wise imitation stages instead of one training phase
    bayes: BayesConfig | None = None  # Bayesian compression of the model's convs/linears (lowrank.bayes)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-safe dict (tuples become lists)."""
        return self.model_dump(mode="json")


# ---------------------------------------------------------------- loading


def _read_text(path: Path, where: str) -> str:
    """The preset's text, or a ConfigError saying why it cannot be a preset (unreadable, binary, not UTF-8)."""
    if not path.is_file():
        what = "a directory, not a preset file" if path.is_dir() else "file not found"
        raise ConfigError(f"{what}{where}", file=str(path),
                          hint="check the path; `base:` is resolved relative to the preset that names it")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read the preset{where}: {error.strerror or error}", file=str(path),
                          hint="check the file's permissions") from None
    if b"\x00" in raw:
        raise ConfigError(f"a binary file, not a YAML preset{where}", file=str(path),
                          hint="give a .yaml experiment file, e.g. presets/quickstart.yaml")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text: byte 0x{raw[error.start]:02x} at line {line}{where}", file=str(path),
                          hint="save the preset as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def _read_yaml(path: Path, referenced_from: tuple[str, str] | None) -> dict[str, Any]:
    where = f" (named by `base:` in {referenced_from[0]})" if referenced_from else ""
    text = _read_text(path, where)
    try:
        data = safe_yaml.load(text)
    except safe_yaml.TooLarge as error:
        raise ConfigError(f"refused: {error}", file=str(path),
                          hint="write the values out; a preset is a few hundred keys and values") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or getattr(error, "reason", None) or str(error)
        problem = " ".join(str(problem).split())
        raise ConfigError(f"not valid YAML{line}: {problem}", file=str(path),
                          hint="check the indentation and quoting near that line") from None
    except RecursionError:
        raise ConfigError("not valid YAML: nested too deeply", file=str(path),
                          hint="a preset is a few levels of sections and keys") from None
    if data is None:
        raise ConfigError(f"the preset is empty{where}", file=str(path),
                          hint="an experiment needs at least the keys it sets, e.g. `base: quickstart.yaml` "
                               "and `name: ...`; an empty file would train an all-defaults run")
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of keys at the top level, got {type(data).__name__}",
                          file=str(path), hint="a preset is `key: value` lines, e.g. `name: my-run`")
    return data


def _merge(base: dict, child: dict, origin: dict[str, str], source: str, prefix: str = "") -> dict:
    """Recursively merge ``child`` into a copy of ``base`` (child wins; lists replaced).

    ``origin`` records, for each key path, the file that last set it, so that an error
    names the file the user must edit.
    """
    merged = copy.deepcopy(base)
    for key, value in child.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value, origin, source, prefix=f"{path}.")
        else:
            merged[key] = copy.deepcopy(value)
            _mark(origin, path, value, source)
    return merged


def _mark(origin: dict[str, str], path: str, value: Any, source: str) -> None:
    origin[path] = source
    if isinstance(value, dict):
        for key, inner in value.items():
            _mark(origin, f"{path}.{key}", inner, source)


def _resolve(path: Path, origin: dict[str, str], chain: tuple[Path, ...],
             referenced_from: tuple[str, str] | None = None) -> dict[str, Any]:
    path = path.expanduser().resolve()
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise ConfigError(f"`base:` cycle: {cycle}", file=str(chain[-1]), key="base",
                          hint="a preset cannot (indirectly) be its own base")
    data = _read_yaml(path, referenced_from)
    base_name = data.pop("base", None)
    merged: dict[str, Any] = {}
    if base_name is not None:
        if not isinstance(base_name, str) or not base_name:
            raise ConfigError(f"expected a file name, got {base_name!r}", file=str(path), key="base",
                              hint="base: names another preset, e.g. base: quickstart.yaml")
        merged = _resolve(path.parent / base_name, origin, (*chain, path), (str(path), "base"))
    return _merge(merged, data, origin, str(path))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``key.path=value`` into the key path and the YAML-typed value."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"expected KEY.PATH=VALUE, got {text!r}", file=OVERRIDE_SOURCE,
                          hint="for example --set train.epochs=3 --set data.augment.cutout=16")
    try:
        value = safe_yaml.load(raw) if raw.strip() else None
    except safe_yaml.TooLarge as error:
        raise ConfigError(f"refused: {error}", file=OVERRIDE_SOURCE, key=key,
                          hint="give the value written out, e.g. --set train.schedule.milestones=[30,60]") from None
    except yaml.YAMLError:
        value = raw  # a value YAML cannot parse is taken as a plain string
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str], origin: dict[str, str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to the merged preset dict (validation happens afterwards)."""
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"cannot set {'.'.join(keys)}: {'.'.join(keys[:depth + 1])} is a "
                                  f"{type(child).__name__}, not a section", file=OVERRIDE_SOURCE,
                                  key=".".join(keys), hint=f"set {'.'.join(keys[:depth + 1])} itself, "
                                                           f"or fix the key path")
            node = child
        node[keys[-1]] = value
        _mark(origin, ".".join(keys), value, OVERRIDE_SOURCE)
    return data


def _source_of(origin: dict[str, str], key_path: str, default: str) -> str:
    """The file that set ``key_path`` or its nearest ancestor.

    For a section (a rule across its keys failed), a ``--set`` of any key inside it wins:
    the user's latest change is the one to look at; else the one file that set its keys.
    """
    under = {source for key, source in origin.items() if key.startswith(f"{key_path}.")}
    if OVERRIDE_SOURCE in under:
        return OVERRIDE_SOURCE
    if key_path not in origin and len(under) == 1:
        return under.pop()
    parts = key_path.split(".")
    while parts:
        found = origin.get(".".join(parts))
        if found:
            return found
        parts.pop()
    return default


def _expected(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    return error.get("msg", "invalid value").replace("Value error, ", "")


def validate(data: dict[str, Any], origin: dict[str, str] | None = None,
             default_source: str = "<config>") -> ExperimentConfig:
    """Validate a merged dict into an :class:`ExperimentConfig`, naming file and key on error."""
    origin = origin or {}
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as error:
        first, *rest = error.errors()
        key_path = ".".join(str(part) for part in first["loc"]) or "<top level>"
        message = _expected(first)
        if first.get("type") == "extra_forbidden":
            section = _section_for(first["loc"][:-1])
            allowed = ", ".join(section.model_fields) if section else ""
            hint = f"known keys here: {allowed}" if allowed else None
        elif first.get("type") == "missing":
            hint = f"add {key_path}"
        else:
            got = first.get("input")
            hint = (f"got {got!r}" if got is not None and not isinstance(got, dict)
                    else f"fix the values under {key_path}")
        if rest:
            more = "; ".join(f"{'.'.join(map(str, e['loc']))}: {_expected(e)}" for e in rest[:4])
            hint = f"{hint + '; ' if hint else ''}also: {more}"
        raise ConfigError(message, file=_source_of(origin, key_path, default_source), key=key_path,
                          hint=hint) from None
    check_protocols(config, origin, default_source)
    check_bayes(config, origin, default_source)
    check_registered(config, origin, default_source)
    return config


def check_protocols(config: ExperimentConfig, origin: dict[str, str], default_source: str) -> None:
    """Cross-section rules of teacher, distill and imitation; derives train.epochs from the stages.

    train.epochs of an imitation run is the sum of its stage epochs: left unset it is taken
    from the stages, set to anything else it is an error (one source of truth, checked).
    """
    def fail(key: str, message: str, hint: str | None = None) -> None:
        raise ConfigError(message, file=_source_of(origin, key, default_source), key=key, hint=hint)

    for section in ("distill", "imitation"):
        if getattr(config, section) is not None and config.teacher is None:
            fail(section, f"{section} needs a teacher", "add teacher.checkpoint (a checkpoint path or a run id)")
    if config.distill is not None and config.imitation is not None:
        fail("imitation", "give distill or imitation, not both",
             "imitation's output stage already distils the teacher's softened outputs")
    imitation = config.imitation
    if imitation is None:
        return
    total = sum(stage.epochs for stage in imitation.stages)
    if "epochs" not in config.train.model_fields_set:
        config.train.epochs = total
    elif config.train.epochs != total:
        fail("train.epochs", f"train.epochs ({config.train.epochs}) must equal the sum of the imitation stage "
                             f"epochs ({total})", "leave train.epochs unset to take the sum of the stages")
    if config.train.aux_weight:
        fail("train.aux_weight", "imitation stages do not use an auxiliary head loss", "set it to 0")
    for i, stage in enumerate(imitation.stages):
        if config.train.nesterov and (stage.optimizer or config.train.optimizer) != "sgd":
            fail(f"imitation.stages.{i}.optimizer", "train.nesterov applies to optimizer: sgd only",
                 "set train.nesterov to false")


def check_bayes(config: ExperimentConfig, origin: dict[str, str], default_source: str) -> None:
    """What a ``bayes:`` run cannot be combined with (the KL is its regulariser and its compression)."""
    if config.bayes is None:
        return

    def fail(key: str, message: str, hint: str) -> None:
        raise ConfigError(message, file=_source_of(origin, key, default_source), key=key, hint=hint)

    if config.substitute.method != "dense":
        fail("substitute.method", "bayes compresses the model's own layers; it does not combine with a "
                                  "substitute method", "set substitute.method: dense")
    if config.imitation is not None:
        fail("imitation", "bayes does not combine with imitation stages", "use distill (KD) with bayes instead")
    if config.train.weight_decay:
        fail("train.weight_decay", "bayes needs train.weight_decay 0 (decay would shrink the log-variances; the "
                                   "KL is the regulariser)", "set train.weight_decay: 0")


def _section_for(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model at location ``loc`` inside ExperimentConfig (for 'known keys' hints)."""
    model: type[BaseModel] = ExperimentConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def check_registered(config: ExperimentConfig, origin: dict[str, str], default_source: str) -> None:
    """Check names and kwargs against the model, dataset and method registries.

    Reads the registries' declarations through :func:`lowrank.catalogue.catalogue`, which
    needs no torch import once its cache is built (a config error answers fast).
    """
    from .catalogue import catalogue

    known = catalogue()
    get_method = known.method

    def list_models() -> list[str]:
        return sorted(known.models)

    def model_kwargs(name: str) -> dict[str, str]:
        return known.models[name]

    def list_datasets() -> list[str]:
        return sorted(known.datasets)

    def dataset_kwargs(name: str) -> dict[str, str]:
        return {key: kind for key, kind in known.datasets[name].items() if key != "config"}

    def fail(key: str, message: str, hint: str | None = None) -> None:
        raise ConfigError(message, file=_source_of(origin, key, default_source), key=key, hint=hint)

    if config.model.name not in list_models():
        fail("model.name", f"unknown model {config.model.name!r}", f"known models: {', '.join(list_models())}")
    _check_kwargs(fail, "model.kwargs", config.model.kwargs, model_kwargs(config.model.name),
                  reserved=("num_classes", "in_channels"))
    if config.teacher is not None and config.teacher.model is not None:
        teacher = config.teacher.model
        if teacher.name not in list_models():
            fail("teacher.model.name", f"unknown model {teacher.name!r}", f"known models: {', '.join(list_models())}")
        _check_kwargs(fail, "teacher.model.kwargs", teacher.kwargs, model_kwargs(teacher.name),
                      reserved=("num_classes", "in_channels"))
    if config.data.name not in list_datasets():
        fail("data.name", f"unknown dataset {config.data.name!r}", f"known datasets: {', '.join(list_datasets())}")
    _check_kwargs(fail, "data.kwargs", config.data.kwargs, dataset_kwargs(config.data.name), reserved=())
    try:
        method = get_method(config.substitute.method)
    except KeyError as error:
        fail("substitute.method", str(error.args[0]), "lowrank methods lists them")
        return
    unknown = sorted(set(config.substitute.options) - set(method.options))
    if unknown:
        known = ", ".join(f"{k} (default {v!r})" for k, v in method.options.items()) or "none"
        fail(f"substitute.options.{unknown[0]}", f"unknown option for method {method.name!r}",
             f"options of {method.name}: {known}")
    wants_target = any(v is not None for v in (config.substitute.hp, config.substitute.budget,
                                               config.substitute.budget_params))
    if method.hp is None and config.substitute.hp is not None:
        fail("substitute.hp", f"method {method.name!r} has no hyperparameter", "remove substitute.hp")
    if method.hp is not None and not wants_target:
        fail("substitute", f"method {method.name!r} needs substitute.hp ({method.hp.name}, "
                           f"{method.hp.low}..{method.hp.high}) or substitute.budget (fraction of dense params)",
             "e.g. --set substitute.budget=0.1 (the solver picks the hp), or set substitute.hp; there is no "
             "default hp")
    if method.hp is not None and config.substitute.hp is not None:
        try:
            method.hp.validate(config.substitute.hp)
        except ValueError as error:
            fail("substitute.hp", str(error), f"{method.hp.name}: {method.hp.description}")


def _check_kwargs(fail, key: str, given: dict[str, Any], accepted: dict[str, str],
                  reserved: tuple[str, ...]) -> None:
    """``accepted``: keyword -> ``inspect.Parameter`` kind name (as the catalogue records them)."""
    takes_any = "VAR_KEYWORD" in accepted.values()
    names = [name for name, kind in accepted.items()
             if name not in reserved and kind not in ("VAR_KEYWORD", "VAR_POSITIONAL")]
    for name in given:
        if name in reserved:
            fail(f"{key}.{name}", "set automatically from the dataset", f"remove {key}.{name}")
        if name not in names and not takes_any:
            fail(f"{key}.{name}", "unknown argument", f"accepted: {', '.join(names) or 'none'}")


def load(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a preset with its ``base:`` chain and ``--set`` overrides, fully validated."""
    origin: dict[str, str] = {}
    data = _resolve(Path(path), origin, chain=())
    data = apply_overrides(data, list(overrides or []), origin)
    return validate(data, origin, default_source=str(Path(path)))


def from_dict(data: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate an already-resolved config dict (e.g. a run directory's config.yaml)."""
    return validate(data, {}, default_source=source)
