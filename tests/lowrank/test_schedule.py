"""Learning-rate schedules against their closed forms."""

from __future__ import annotations

import math

import pytest

from lowrank.config import ScheduleConfig
from lowrank.schedule import lr_multiplier


def test_cosine_endpoints_and_midpoint():
    config = ScheduleConfig(name="cosine")
    assert lr_multiplier(config, 0, 10) == pytest.approx(1.0)
    assert lr_multiplier(config, 5, 10) == pytest.approx(0.5)
    assert lr_multiplier(config, 10, 10) == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier(config, 2.5, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_cosine_floor():
    config = ScheduleConfig(name="cosine", min_lr_ratio=0.1)
    assert lr_multiplier(config, 10, 10) == pytest.approx(0.1)


def test_multistep_wrn_protocol():
    # WRN: lr x 0.2 at epochs 60, 120, 160
    config = ScheduleConfig(name="multistep", milestones=[60, 120, 160], gamma=0.2)
    assert lr_multiplier(config, 59.99, 200) == pytest.approx(1.0)
    assert lr_multiplier(config, 60, 200) == pytest.approx(0.2)
    assert lr_multiplier(config, 130, 200) == pytest.approx(0.04)
    assert lr_multiplier(config, 199, 200) == pytest.approx(0.008)


def test_piecewise_linear_dawn():
    # ResNet-9 DAWNBench: 0 -> 0.4 over 5 epochs, back to 0 at epoch 24 (multipliers of lr=0.4)
    config = ScheduleConfig(name="piecewise", epochs=[0, 5, 24], values=[0, 1, 0])
    assert lr_multiplier(config, 0, 24) == 0
    assert lr_multiplier(config, 2.5, 24) == pytest.approx(0.5)
    assert lr_multiplier(config, 5, 24) == pytest.approx(1.0)
    assert lr_multiplier(config, 14.5, 24) == pytest.approx(0.5)
    assert lr_multiplier(config, 24, 24) == pytest.approx(0.0)


def test_warmup_multiplies_the_schedule():
    config = ScheduleConfig(name="multistep", milestones=[30, 60, 80], gamma=0.1, warmup_epochs=5)
    assert lr_multiplier(config, 0, 90) == 0
    assert lr_multiplier(config, 2.5, 90) == pytest.approx(0.5)
    assert lr_multiplier(config, 10, 90) == pytest.approx(1.0)
