"""Loading of the compiled operator library vidtempo._C and its torch.library registrations.

Importing this module never compiles anything: the library is built once, at install time, by
setup.py. `load()` returns None with the reason when it cannot be imported; the registrations
(fake tensors for torch.compile, autograd) happen only after the library loaded.
"""

from __future__ import annotations

import torch

_state: dict[str, object] = {}


def _setup_context(ctx, inputs, output):
    _, shift = inputs
    ctx.save_for_backward(shift)


def _backward(ctx, grad):
    (shift,) = ctx.saved_tensors
    return torch.ops.vidtempo.tin_shift_backward(grad.contiguous(), shift), None


def _backward_of_backward(ctx, grad):
    (shift,) = ctx.saved_tensors
    return torch.ops.vidtempo.tin_shift(grad.contiguous(), shift), None


def _fake(x, shift):
    torch._check(x.dim() == 4, lambda: "tin_shift: input must be 4-D [N, T, C, HW]")
    torch._check(shift.dim() == 2, lambda: "tin_shift: shift must be 2-D [N, G]")
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _sample_fake(data, offset, weight):
    torch._check(data.dim() == 4, lambda: "tin_sample: input must be 4-D [N, T, C, HW]")
    return torch.empty_like(data, memory_format=torch.contiguous_format)


def _sample_backward_fake(grad, data, offset, weight):
    return (torch.empty_like(data, memory_format=torch.contiguous_format),
            torch.empty_like(offset, memory_format=torch.contiguous_format),
            torch.empty_like(weight, memory_format=torch.contiguous_format))  # fmt: skip


def _register() -> None:
    torch.library.register_fake("vidtempo::tin_shift")(_fake)
    torch.library.register_fake("vidtempo::tin_shift_backward")(_fake)
    torch.library.register_autograd("vidtempo::tin_shift", _backward, setup_context=_setup_context)
    # The backward is itself linear (the shift by -s), so its derivative is the forward op:
    # double backward works too.
    torch.library.register_autograd(
        "vidtempo::tin_shift_backward", _backward_of_backward, setup_context=_setup_context
    )
    if hasattr(torch.ops.vidtempo, "tin_sample"):
        # TIN's fused sampler: its autograd is registered in C++ (cuda/tin_sample_autograd.cpp:
        # a Python one cost more than the kernel at the demo's sizes)
        torch.library.register_fake("vidtempo::tin_sample")(_sample_fake)
        torch.library.register_fake("vidtempo::tin_sample_backward")(_sample_backward_fake)
    # No autocast rule is needed: both kernels accept float32/float64/float16/bfloat16 and
    # return the input's dtype, which is what autocast would ask for a copy-only op.


def load():
    """The torch.ops.vidtempo namespace, or None (and the reason in `why_not()`)."""
    if "ops" in _state:
        return _state["ops"]
    try:
        from vidtempo import _C  # noqa: F401  (loading the library registers the schemas)
    except ImportError as exc:
        _state["ops"] = None
        _state["why"] = (
            f"vidtempo._C was not built or cannot be loaded ({exc}); reinstall with "
            "`make install` (or `pip install --no-build-isolation -e .`) to build it"
        )
        return None
    _register()
    _state["ops"] = torch.ops.vidtempo
    _state["why"] = ""
    return _state["ops"]


def why_not() -> str:
    load()
    return str(_state.get("why", ""))


def has_sample_kernel() -> bool:
    """Whether vidtempo._C has TIN's fused sampler (tin_sample), a CPU kernel."""
    return load() is not None and hasattr(torch.ops.vidtempo, "tin_sample")


def has_cuda_kernel() -> bool:
    """Whether vidtempo._C was built with the CUDA kernel (true even on a machine without GPU)."""
    if load() is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("vidtempo::tin_shift", "CUDA")
