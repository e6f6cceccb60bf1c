"""vidtempo.ops.tin_shift: the compiled operator with a pure-PyTorch fallback.

`tin_shift(x, shift)` uses vidtempo._C (CPU kernel always, CUDA kernel when it was built) and
falls back to the reference with one warning that says why. VIDTEMPO_TIN_SHIFT=reference or
=native forces one; native then fails loudly if it is missing.
"""

from __future__ import annotations

import os
import warnings

import torch

from vidtempo.ops import native
from vidtempo.ops.reference import tin_shift_backward_reference, tin_shift_reference

__all__ = ["tin_shift", "tin_shift_reference", "tin_shift_backward_reference", "check_args",
           "fused_sampler"]

_warned: set[str] = set()


def check_args(x: torch.Tensor, shift: torch.Tensor) -> None:
    """The op's input contract, with messages that say what to do."""
    if not isinstance(x, torch.Tensor) or not isinstance(shift, torch.Tensor):
        raise TypeError("tin_shift(x, shift) takes two tensors")
    if x.dim() != 4:
        raise ValueError(
            f"tin_shift: input must be 4-D [N, T, C, HW], got shape {list(x.shape)}; "
            "reshape a [N*T, C, H, W] activation with .view(N, T, C, H*W)"
        )
    if shift.dim() != 2:
        raise ValueError(f"tin_shift: shift must be 2-D [N, G], got shape {list(shift.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(
            f"tin_shift: input must be float32, float64, float16 or bfloat16, got {x.dtype}"
        )
    if shift.dtype.is_floating_point or shift.dtype.is_complex or shift.dtype == torch.bool:
        raise TypeError(
            f"tin_shift: shift must be an integer tensor (int32 or int64), got {shift.dtype}; "
            "round fractional offsets first, e.g. offset.floor().int()"
        )
    if shift.device != x.device:
        raise ValueError(
            f"tin_shift: shift is on {shift.device} but input is on {x.device}; "
            "move it with shift.to(input.device)"
        )
    if shift.shape[0] != x.shape[0]:
        raise ValueError(
            f"tin_shift: shift has {shift.shape[0]} rows but input has N = {x.shape[0]} "
            "(one row of G shifts per sample)"
        )
    c, g = x.shape[2], shift.shape[1]
    if g <= 0 or c % g:
        raise ValueError(
            f"tin_shift: the channel count C = {c} must be a positive multiple of the number "
            f"of groups G = {g} (shift.size(1))"
        )


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def backend() -> str:
    """'native' or 'reference': what tin_shift will run on CPU tensors."""
    forced = os.environ.get("VIDTEMPO_TIN_SHIFT", "").strip().lower()
    if forced not in ("", "native", "reference"):
        raise ValueError(
            f"VIDTEMPO_TIN_SHIFT={forced!r}: use 'native', 'reference' or leave it unset"
        )
    if forced == "reference":
        return "reference"
    if native.load() is None:
        if forced == "native":
            raise RuntimeError(f"VIDTEMPO_TIN_SHIFT=native but {native.why_not()}")
        _warn_once("fallback", f"tin_shift uses the pure-PyTorch reference: {native.why_not()}")
        return "reference"
    return "native"


def tin_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift channel groups of x [N, T, C, HW] along time by shift [N, G] (integers)."""
    check_args(x, shift)
    if backend() == "reference":
        return tin_shift_reference(x, shift)
    if x.is_cuda and not native.has_cuda_kernel():
        raise RuntimeError(
            "tin_shift got a CUDA tensor but vidtempo._C was built without its CUDA kernel; "
            "rebuild on a machine with the CUDA toolkit: CUDA_HOME=/usr/local/cuda "
            "VIDTEMPO_BUILD_CUDA=1 pip install --no-build-isolation -e . "
            "(or set VIDTEMPO_TIN_SHIFT=reference to run the slow pure-PyTorch version)"
        )
    return torch.ops.vidtempo.tin_shift(x, shift)


def fused_sampler(data: torch.Tensor) -> bool:
    """Whether TIN's linear sampler over `data` runs as one native call (vidtempo::tin_sample,
    a CPU kernel for float32/float64) instead of its composite of tin_shift and elementwise ops.
    Under VIDTEMPO_TIN_SHIFT=reference the composite runs, on the reference shift."""
    return (data.device.type == "cpu" and data.dtype in (torch.float32, torch.float64)
            and backend() == "native" and native.has_sample_kernel())  # fmt: skip
