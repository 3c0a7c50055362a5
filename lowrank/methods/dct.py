"""Orthonormal DCT-II and its inverse (DCT-III) along the last dimension, via one real FFT.

Makhoul (1980), "A fast cosine transform in one and multiple dimensions": reorder the input
(even samples ascending, then odd samples descending), take an N-point real FFT, rotate by the
twiddle ``exp(-i*pi*k/(2N))``. Works for every N (not only powers of two) and on any device;
differentiable through ``torch.fft``. Matches ``scipy.fft.dct(x, type=2, norm="ortho")`` and
``scipy.fft.idct(x, type=2, norm="ortho")`` (= DCT-III ortho).

This module registers no method (it is imported by :mod:`lowrank.methods.acdc`).

Cost convention for mult-add counts (:func:`dct_macs`): one length-N DCT (or inverse) costs
``N * ceil(log2 N)`` mult-adds, the usual O(N log N) FFT figure, rounded up to an integer.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch

_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


@contextlib.contextmanager
def plain_tensors() -> Iterator[None]:
    """Tensors kept for later calls are made outside inference mode and without autograd: one made
    under ``torch.inference_mode()`` (a latency measurement, ``bench.after_run``) is an inference
    tensor, and every later training forward that used it failed ("Inference tensors cannot be
    saved for backward")."""
    with torch.inference_mode(False), torch.no_grad():
        yield
_MATRICES: dict[tuple, torch.Tensor] = {}


def _tables(n: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Makhoul permutation, its inverse, ortho-scaled twiddles s_k*exp(-i*pi*k/2N) for k <= N//2),
    cached per (n, device, dtype); under ``torch.export`` built in the graph and never cached (a
    traced tensor kept in a process-wide table would reach every later eager call)."""
    if torch.compiler.is_exporting():
        return _make_tables(n, device, dtype)
    key = (n, str(device), dtype)
    if key not in _CACHE:
        with plain_tensors():
            _CACHE[key] = _make_tables(n, device, dtype)
    return _CACHE[key]


def _make_tables(n: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tables of :func:`_tables` from closed forms in real arithmetic (an exporter traces them):
    perm[i] = 2i for i < ceil(N/2), else 2(N-i)-1 (evens ascending, then odds descending); its
    inverse sends an even j to j/2 and an odd j to N-(j+1)/2."""
    i = torch.arange(n, device=device)
    perm = torch.where(i < (n + 1) // 2, 2 * i, 2 * (n - i) - 1)
    inverse = torch.where(i % 2 == 0, i // 2, n - (i + 1) // 2)
    k = torch.arange(n // 2 + 1, device=device, dtype=torch.float64)
    scale = torch.where(k == 0, torch.full_like(k, math.sqrt(1.0 / n)), torch.full_like(k, math.sqrt(2.0 / n)))
    angle = -math.pi * k / (2 * n)
    real = dtype if dtype == torch.float64 else torch.float32
    twiddle = torch.complex((torch.cos(angle) * scale).to(real), (torch.sin(angle) * scale).to(real))
    return perm, inverse, twiddle


def dct(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last dimension (``scipy.fft.dct(x, type=2, norm='ortho')``)."""
    n = x.shape[-1]
    _, _, twiddle = _tables(n, x.device, x.dtype)
    # Makhoul: V = rfft(v), v = x reordered; X[k] = Re(W^k V[k]), X[N-k] = -Im(W^k V[k]).
    z = torch.fft.rfft(to_makhoul(x), dim=-1) * twiddle
    head = z.real                                        # X[0 .. N//2]
    tail = -z.imag[..., 1:(n - 1) // 2 + 1].flip(-1)     # X[N//2+1 .. N-1]
    # the twiddle already carries the k>0 scale sqrt(2/N); X[N-k] uses W^k's scale, which is the same
    return torch.cat([head, tail], dim=-1)


def idct(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct`: orthonormal DCT-III along the last dimension (``scipy.fft.idct``, ortho)."""
    n = y.shape[-1]
    _, _, twiddle = _tables(n, y.device, y.dtype)
    # Invert X[k] = Re(W^k V[k]), X[N-k] = -Im(W^k V[k]) (with ortho scales s_k):
    # W^k V[k] = X[k]/s_k - i X[N-k]/s_k, X[N] := 0, then v = irfft(V), x[perm] = v.
    half = n // 2 + 1
    re = y[..., :half]
    im = torch.zeros_like(re)
    im[..., 1:] = -y[..., n - n // 2:].flip(-1)  # -X[N-k] for 1 <= k <= N//2
    # |twiddle_k| = s_k, so dividing by twiddle = multiplying by conj(W^k) / s_k
    spectrum = torch.complex(re, im) / twiddle
    v = torch.fft.irfft(spectrum, n=n, dim=-1)
    return from_makhoul(v)


def makhoul_order(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(perm, inverse): :func:`dct` reads its input as ``x[..., perm]``; :func:`idct` writes
    ``v[..., inverse]``. Exposed so a stack of layers can compose the reorderings into one gather."""
    perm, inverse, _ = _tables(n, device, torch.float32)
    return perm, inverse


def to_makhoul(x: torch.Tensor) -> torch.Tensor:
    """``x[..., perm]`` of :func:`makhoul_order` (evens ascending, then odds descending) as two
    strided copies: 0.085 ms where ``index_select`` takes 0.136 ms at 128 x 4096 on a 2-core CPU
    (the gather was a third of the ACDC fast path, issue 24). Exported, the gather (one ONNX op)."""
    if torch.compiler.is_exporting():
        return x.index_select(-1, makhoul_order(x.shape[-1], x.device)[0])
    return torch.cat([x[..., 0::2], x[..., 1::2].flip(-1)], dim=-1)


def from_makhoul(w: torch.Tensor) -> torch.Tensor:
    """``w[..., inverse]`` of :func:`makhoul_order`, the inverse of :func:`to_makhoul`: the first
    ceil(N/2) entries go to the even places, the rest, reversed, to the odd ones."""
    n = w.shape[-1]
    if torch.compiler.is_exporting():
        return w.index_select(-1, makhoul_order(n, w.device)[1])
    evens = (n + 1) // 2
    out = w.new_empty(w.shape)
    out[..., 0::2] = w[..., :evens]
    out[..., 1::2] = w[..., evens:].flip(-1)
    return out


def scale_in_dct_domain(v: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``idct(dct(x) * d)`` in Makhoul order, in one spectrum: given ``v = x[..., perm]``, returns ``w``
    with ``idct(dct(x) * d) == w[..., inverse]`` (:func:`makhoul_order`).

    Follows :func:`dct` and :func:`idct` through the diagonal without assembling the real DCT
    coefficients: with ``u = rfft(v) * t`` (t the scaled twiddles), dct gives X[k] = Re u[k] and
    X[N-k] = -Im u[k]; idct of X*d takes the spectrum (d[k] X[k] - i d[N-k] X[N-k]) / t[k]
    = (d[k] Re u[k] + i d[N-k] Im u[k]) / t[k] (bin 0 has no imaginary part; for even N the
    Nyquist bin k = N/2 is d[N/2] X[N/2] (1 - i) / t[N/2]). Two FFTs and three pointwise passes,
    where dct then idct make about a dozen (the ACDC fast path's cost, issue 12).
    """
    n = v.shape[-1]
    _, _, twiddle = _tables(n, v.device, v.dtype)
    half = n // 2 + 1
    partner, inverse_twiddle = _spectral_tables(n, v.device, v.dtype)
    imag_scale = d.index_select(0, partner) * (partner != 0)  # d[N-k]; bin 0 (partner 0) has none
    scale = torch.stack([d[:half], imag_scale], dim=-1)
    u = torch.view_as_real(torch.fft.rfft(v, dim=-1) * twiddle) * scale
    if n % 2 == 0:
        u[..., -1, 1] = -u[..., -1, 0]  # the Nyquist bin: X[N/2] enters as its real and -imaginary part
    return torch.fft.irfft(torch.view_as_complex(u) * inverse_twiddle, n=n, dim=-1)


_SPECTRAL: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _spectral_tables(n: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(N - k for the rfft bins k = 0..N//2, 0 for k = 0; 1 / twiddle, so the inverse multiplies)."""
    if torch.compiler.is_exporting():  # in the graph, uncached (see _tables)
        return _make_spectral_tables(n, device, dtype)
    key = (n, str(device), dtype)
    if key not in _SPECTRAL:
        with plain_tensors():
            _SPECTRAL[key] = _make_spectral_tables(n, device, dtype)
    return _SPECTRAL[key]


def _make_spectral_tables(n: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The tables of :func:`_spectral_tables`; 1 / (s_k e^(i a_k)) = e^(-i a_k) / s_k in real arithmetic."""
    k = torch.arange(n // 2 + 1, device=device)
    _, _, twiddle = _make_tables(n, device, dtype)
    magnitude = twiddle.abs()
    inverse_twiddle = torch.complex(twiddle.real / magnitude ** 2, -twiddle.imag / magnitude ** 2)
    return (n - k) % n, inverse_twiddle


def dct_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The N x N orthonormal DCT-II matrix C (so ``dct(x) == x @ C.T``), built from the cosine formula."""
    # on the CPU even under ``with torch.device("meta")``: callers move it (see _make_tables)
    k = torch.arange(n, dtype=torch.float64, device="cpu")[:, None]
    i = torch.arange(n, dtype=torch.float64, device="cpu")[None, :]
    c = torch.cos(math.pi * k * (2 * i + 1) / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.to(dtype)


def cached_dct_matrix(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """:func:`dct_matrix` on ``device``/``dtype``, built once per (n, device, dtype)."""
    if torch.compiler.is_exporting():  # in the graph, uncached (see _tables)
        return dct_matrix(n).to(device=device, dtype=dtype)
    key = ("matrix", n, str(device), dtype)
    if key not in _MATRICES:
        with plain_tensors():
            _MATRICES[key] = dct_matrix(n).to(device=device, dtype=dtype)
    return _MATRICES[key]


def dct_macs(n: int) -> int:
    """Mult-adds charged for one length-n DCT or inverse DCT: n * ceil(log2 n) (0 for n = 1)."""
    return n * math.ceil(math.log2(n)) if n > 1 else 0
