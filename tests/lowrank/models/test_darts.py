"""DARTS_V2 evaluation network: counts, genotype, auxiliary head, drop-path, taps."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from lowrank.distill import TapRecorder
from lowrank.models import create_model
from lowrank.models.darts import DARTS_V2, Cell
from lowrank.models.darts_ops import DilConv, FactorizedReduce, Identity, SepConv, drop_path


def test_parameter_counts_with_and_without_the_auxiliary_head() -> None:
    with torch.device("meta"):
        model = create_model("darts")
    total = sum(p.numel() for p in model.parameters())
    aux = sum(p.numel() for n, p in model.named_parameters() if n.startswith("auxiliary_head"))
    assert total - aux == 3_349_342  # the DARTS repo's "param size = 3.349342MB" (aux excluded)
    # aux head: 1x1 conv 576->128 + BN + 2x2 conv 128->768 + BN + linear 768->10
    assert aux == 576 * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * 10 + 10
    with torch.device("meta"):
        assert sum(p.numel() for p in create_model("darts", auxiliary=False).parameters()) == 3_349_342


def test_cells_follow_the_darts_v2_genotype() -> None:
    with torch.device("meta"):
        model = create_model("darts")
    reductions = [i for i, cell in enumerate(model.cells) if cell.reduction]
    assert reductions == [6, 13]
    kinds = {SepConv: "sep_conv_3x3", DilConv: "dil_conv_3x3", Identity: "skip_connect", nn.MaxPool2d: "max_pool_3x3"}
    normal, reduce = model.cells[0], model.cells[6]
    assert [(kinds[type(op)], i) for op, i in zip(normal.ops, normal.indices)] == DARTS_V2.normal
    assert [(kinds[type(op)], i) for op, i in zip(reduce.ops, reduce.indices)] == DARTS_V2.reduce
    # after a reduction cell the older input is factor-reduced; elsewhere a 1x1 ReLUConvBN
    assert isinstance(model.cells[7].preprocess0, FactorizedReduce)
    assert not isinstance(model.cells[8].preprocess0, FactorizedReduce)
    assert model.tap_names == ("cells.5", "cells.12", "cells.19")


def test_small_darts_trains_with_aux_head_and_evaluates_without() -> None:
    torch.manual_seed(0)
    model = create_model("darts", num_classes=10, C=8, layers=5)
    assert model.tap_names == ("cells.0", "cells.2", "cells.4")
    model.drop_path_prob = 0.2
    with TapRecorder(model, model.tap_names) as taps:
        logits, aux = model(torch.randn(2, 3, 32, 32))
        shapes = {name: tuple(taps.get(name).shape) for name in model.tap_names}
    (logits.sum() + aux.sum()).backward()
    assert logits.shape == aux.shape == (2, 10)
    assert shapes == {"cells.0": (2, 32, 32, 32), "cells.2": (2, 64, 16, 16), "cells.4": (2, 128, 8, 8)}
    model.eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    model.train()
    assert create_model("darts", C=8, layers=5, auxiliary=False)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_drop_path_drops_whole_samples_and_rescales_the_rest() -> None:
    torch.manual_seed(0)
    x = torch.ones(400, 2, 3, 3)
    assert drop_path(x, 0.0) is x
    y = drop_path(x, 0.25)
    per_sample = y.flatten(1)
    values = per_sample.unique()
    assert values.tolist()[0] == 0.0 and len(values) == 2
    assert values[1].item() == pytest.approx(1 / 0.75)
    assert (per_sample == per_sample[:, :1]).all()  # a sample is kept or dropped as a whole
    assert 0.15 < (per_sample[:, 0] == 0).float().mean() < 0.35


def test_drop_path_spares_identity_ops() -> None:
    # DARTS_V2 normal cell: nodes 2, 3 are sums of sep convs; node 4 = sep(s1) + skip(s0);
    # node 5 = skip(s0) + dil(node 2). With every non-identity op dropped, the cell outputs
    # [0, 0, s0', s0'] where s0' is the preprocessed s0: the identities pass untouched.
    torch.manual_seed(0)
    cell = Cell(DARTS_V2, 8, 8, 4, reduction=False, reduction_prev=False).train()
    s0, s1 = torch.randn(3, 8, 6, 6), torch.randn(3, 8, 6, 6)
    out = cell(s0, s1, drop_prob=1 - 1e-9)  # keep probability 1e-9: every sample dropped
    s0p = cell.preprocess0(s0)
    torch.testing.assert_close(out, torch.cat([torch.zeros_like(s0p)] * 2 + [s0p, s0p], dim=1))


def test_drop_path_prob_changes_training_output_only() -> None:
    model = create_model("darts", C=8, layers=5, auxiliary=False)
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(1)
    plain = model(x)
    model.drop_path_prob = 0.5
    torch.manual_seed(1)
    assert not torch.allclose(model(x), plain)
    model.eval()
    reference = model(x)
    model.drop_path_prob = 0.0
    torch.testing.assert_close(model(x), reference)


def test_factorized_reduce_halves_the_resolution() -> None:
    op = FactorizedReduce(6, 10)
    assert op(torch.randn(2, 6, 8, 8)).shape == (2, 10, 4, 4)
