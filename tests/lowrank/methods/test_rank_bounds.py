"""Issue 11: no TT/Tucker rank above its effective bound, and every compressed method refuses a grouped conv.

The bounds are checked against an independent fact, not our formula: numpy's matrix rank of the
unfoldings of a full-rank random decomposition. A rank above its bound cannot raise the rank of
the unfolding it sits in, so such a rank is redundant parameters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lowrank.methods import get_method, list_methods
from lowrank.methods.registry import ConvSpec
from lowrank.methods.tt import TTConv, tt_params, tt_ranks
from lowrank.methods.tucker import TuckerConv, tucker_params, tucker_ranks
from lowrank.methods._tensor import mode_sizes

SHAPES = [(c_in, c_out) for c_in in (3, 16, 17, 64, 160, 320, 640) for c_out in (10, 16, 36, 128, 640)]
SCALES = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]


@pytest.mark.parametrize("c_in,c_out", SHAPES)
@pytest.mark.parametrize("dims", [2, 3, 4])
def test_tt_ranks_never_exceed_their_neighbour_bounds(c_in, c_out, dims):
    spec = ConvSpec(c_in, c_out, (3, 3), padding=(1, 1))
    sizes = mode_sizes(spec, dims)
    for scale in SCALES:
        ranks = tt_ranks(spec, scale, dims)
        for k in range(1, dims):
            assert ranks[k] <= ranks[k - 1] * sizes[k - 1], (ranks, sizes)
            assert ranks[k] <= sizes[k] * ranks[k + 1], (ranks, sizes)


@pytest.mark.parametrize("c_in,c_out", SHAPES)
@pytest.mark.parametrize("dims", [2, 3, 4])
def test_tucker_ranks_never_exceed_the_product_of_the_others(c_in, c_out, dims):
    spec = ConvSpec(c_in, c_out)
    for scale in SCALES:
        ranks = tucker_ranks(spec, scale, dims)
        for k in range(dims):
            assert ranks[k] <= math.prod(ranks[:k] + ranks[k + 1:]), ranks


@pytest.mark.parametrize("c_in,c_out,dims", [(16, 36, 3), (64, 128, 3), (17, 10, 2), (160, 320, 4)])
def test_every_rank_is_used_by_a_random_decomposition(c_in, c_out, dims):
    """Independent check: each unfolding of a random TT / Tucker tensor reaches the stored rank."""
    spec = ConvSpec(c_in, c_out)
    torch.manual_seed(0)
    for scale in (0.3, 0.7, 1.0):
        tt = TTConv(spec, scale, dims=dims)
        cores = [c.detach().double().numpy() for c in tt.cores]
        for k in range(1, dims):  # left unfolding of core k, right unfolding of core k+1
            left = cores[k - 1].reshape(-1, cores[k - 1].shape[-1])
            right = cores[k].reshape(cores[k].shape[0], -1)
            assert np.linalg.matrix_rank(left) == tt.ranks[k] == np.linalg.matrix_rank(right)
        tucker = TuckerConv(spec, scale, dims=dims)
        core = tucker.core.detach().double().numpy()
        for k in range(dims):
            unfolding = np.moveaxis(core, k, 0).reshape(core.shape[k], -1)
            assert np.linalg.matrix_rank(unfolding) == tucker.ranks[k]


@pytest.mark.parametrize("method", ["tt", "tucker"])
def test_counts_stay_monotone_in_rank_scale_after_clamping(method):
    count = {"tt": tt_params, "tucker": tucker_params}[method]
    for c_in, c_out in SHAPES:
        spec = ConvSpec(c_in, c_out, (3, 3), padding=(1, 1))
        values = [count(spec, s / 200) for s in range(0, 201)]
        assert values == sorted(values), (c_in, c_out)


COMPRESSED = [m.name for m in list_methods() if m.name != "dense"]


@pytest.mark.parametrize("method", COMPRESSED)
def test_every_compressed_method_refuses_a_grouped_conv(method):
    declaration = get_method(method)
    spec = ConvSpec(32, 64, (3, 3), padding=(1, 1), groups=4)
    hp = declaration.hp.default if declaration.hp else None
    with pytest.raises(ValueError, match="groups=1"):
        declaration.build(spec, hp)


def test_dense_keeps_a_grouped_conv_exactly():
    spec = ConvSpec(32, 64, (3, 3), padding=(1, 1), groups=4)
    layer = get_method("dense").build(spec, None)
    assert layer.conv.groups == 4 and sum(p.numel() for p in layer.parameters()) == spec.dense_params
