"""vidtempo.ops.tin_shift: native kernels against the reference, adjoint, registration, errors."""

from __future__ import annotations

import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vidtempo.ops as ops
from vidtempo.ops import native
from vidtempo.ops.reference import tin_shift_backward_reference, tin_shift_reference

requires_native = pytest.mark.skipif(native.load() is None, reason="vidtempo._C is not built")
gpu = pytest.mark.gpu
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

# mmcv's own fixture (tests/test_ops/test_tin_shift.py): N=2, T=4, C=8, HW=2.
MMCV_INPUT = [
    [
        [[0.88572276, 0.46422583], [0.97408265, 0.59547687], [0.030812204, 0.96236038],
         [0.75418317, 0.44058233], [0.33279222, 0.00084149837], [0.7069388, 0.23255438],
         [0.13547045, 0.81549376], [0.40174931, 0.36317211]],
        [[0.57444429, 0.15905505], [0.39897251, 0.25790238], [0.93282568, 0.18451685],
         [0.92526674, 0.18283755], [0.31664443, 0.59323865], [0.1957739, 0.42505842],
         [0.081158757, 0.81340349], [0.43456328, 0.30195212]],
        [[0.8198145, 0.05990988], [0.98062474, 0.34803438], [0.10412294, 0.37183142],
         [0.15021622, 0.038857818], [0.40985721, 0.42253625], [0.71150124, 0.59778064],
         [0.83851069, 0.15194464], [0.097513378, 0.74820143]],
        [[0.80680406, 0.49327564], [0.17821097, 0.12980539], [0.50657678, 0.14446253],
         [0.04178369, 0.53071898], [0.84983683, 0.3826949], [0.32193625, 0.91275406],
         [0.75628334, 0.52934098], [0.27994192, 0.3053292]],
    ],
    [
        [[0.082397044, 0.4210068], [0.23563534, 0.7938987], [0.63669145, 0.69397897],
         [0.8844561, 0.97854084], [0.79027033, 0.60640401], [0.63528901, 0.72172403],
         [0.0097346902, 0.70800996], [0.87891227, 0.13674974]],
        [[0.74329448, 0.0243572], [0.82178867, 0.85750699], [0.7568835, 0.73146772],
         [0.5031184, 0.30479157], [0.28713053, 0.47414285], [0.4682079, 0.067471564],
         [0.48368263, 0.14590704], [0.25397325, 0.19946373]],
        [[0.4291026, 0.068739474], [0.7159555, 0.79903615], [0.76412082, 0.85348046],
         [0.081224024, 0.82264912], [0.97173303, 0.24291694], [0.48957139, 0.43488795],
         [0.67382395, 0.21889746], [0.36712623, 0.67127824]],
        [[0.12054044, 0.18096751], [0.86675781, 0.54755616], [0.68208277, 0.15164375],
         [0.79991871, 0.80811197], [0.85256428, 0.68253738], [0.185983, 0.95642138],
         [0.48102546, 0.28009653], [0.35726011, 0.58168036]],
    ],
]  # fmt: skip
MMCV_SHIFT = [[1, 0, 1, -2], [-2, 1, -1, 1]]
MMCV_OUTPUT = [
    [
        [[0.0, 0.0], [0.0, 0.0], [0.030812, 0.96236], [0.75418, 0.44058],
         [0.0, 0.0], [0.0, 0.0], [0.83851, 0.15194], [0.097513, 0.7482]],
        [[0.88572, 0.46423], [0.97408, 0.59548], [0.93283, 0.18452], [0.92527, 0.18284],
         [0.33279, 0.0008415], [0.70694, 0.23255], [0.75628, 0.52934], [0.27994, 0.30533]],
        [[0.57444, 0.15906], [0.39897, 0.2579], [0.10412, 0.37183], [0.15022, 0.038858],
         [0.31664, 0.59324], [0.19577, 0.42506], [0.0, 0.0], [0.0, 0.0]],
        [[0.81981, 0.05991], [0.98062, 0.34803], [0.50658, 0.14446], [0.041784, 0.53072],
         [0.40986, 0.42254], [0.7115, 0.59778], [0.0, 0.0], [0.0, 0.0]],
    ],
    [
        [[0.4291, 0.068739], [0.71596, 0.79904], [0.0, 0.0], [0.0, 0.0],
         [0.28713, 0.47414], [0.46821, 0.067472], [0.0, 0.0], [0.0, 0.0]],
        [[0.12054, 0.18097], [0.86676, 0.54756], [0.63669, 0.69398], [0.88446, 0.97854],
         [0.97173, 0.24292], [0.48957, 0.43489], [0.0097347, 0.70801], [0.87891, 0.13675]],
        [[0.0, 0.0], [0.0, 0.0], [0.75688, 0.73147], [0.50312, 0.30479],
         [0.85256, 0.68254], [0.18598, 0.95642], [0.48368, 0.14591], [0.25397, 0.19946]],
        [[0.0, 0.0], [0.0, 0.0], [0.76412, 0.85348], [0.081224, 0.82265],
         [0.0, 0.0], [0.0, 0.0], [0.67382, 0.2189], [0.36713, 0.67128]],
    ],
]  # fmt: skip


def loop_tin_shift(x, shift):
    """The definition, one element at a time."""
    n_, t_, c_, _ = x.shape
    g_ = shift.shape[1]
    out = torch.zeros_like(x)
    for n in range(n_):
        for c in range(c_):
            s = int(shift[n, c // (c_ // g_)])
            for t in range(t_):
                if 0 <= t - s < t_:
                    out[n, t, c] = x[n, t - s, c]
    return out


def native_op(x, shift):
    return torch.ops.vidtempo.tin_shift(x, shift)


# --------------------------------------------------------------------------------------------
# semantics


def test_reference_equals_the_definition():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 12, 3, generator=g)
    shift = torch.tensor([[1, -1, 0], [5, -7, 2], [-3, 4, 100]])
    assert torch.equal(tin_shift_reference(x, shift), loop_tin_shift(x, shift))


@pytest.mark.parametrize("impl", ["reference", pytest.param("native", marks=requires_native)])
def test_mmcv_fixture_forward_values(impl):
    fn = tin_shift_reference if impl == "reference" else native_op
    x = torch.tensor(MMCV_INPUT)
    out = fn(x, torch.tensor(MMCV_SHIFT, dtype=torch.int32))
    torch.testing.assert_close(out, torch.tensor(MMCV_OUTPUT), atol=1e-5, rtol=1e-4)
    # group 0 (shift 1): t=0 is zero, t=1 holds input t=0; group 3 (shift -2): t=0 holds t=2
    assert torch.all(out[0, 0, 0:2] == 0)
    assert torch.equal(out[0, 1, 0:2], x[0, 0, 0:2])
    assert torch.equal(out[0, 0, 6:8], x[0, 2, 6:8])


@pytest.mark.parametrize("impl", ["reference", pytest.param("native", marks=requires_native)])
def test_backward_is_the_true_adjoint_not_mmcvs(impl):
    fn = tin_shift_reference if impl == "reference" else native_op
    x = torch.arange(4.0).view(1, 4, 1, 1).requires_grad_()
    shift = torch.tensor([[1]], dtype=torch.int32)
    out = fn(x, shift)
    assert out.flatten().tolist() == [0.0, 0.0, 1.0, 2.0]  # frame t receives frame t-1
    out.backward(torch.ones_like(out))
    # grad_in[u] = grad_out[u + 1]: frames 0..2 feed an output, frame 3 falls off the end.
    assert x.grad.flatten().tolist() == [1.0, 1.0, 1.0, 0.0]
    # mmcv's backward repeats the forward and gives [0, 1, 1, 1] (its fixture's grads row).
    assert x.grad.flatten().tolist() != [0.0, 1.0, 1.0, 1.0]
    # <A x, y> == <x, A^T y> for a random y
    y = torch.randn(1, 4, 1, 1)
    lhs = (fn(x.detach(), shift) * y).sum()
    rhs = (x.detach() * tin_shift_backward_reference(y, shift)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_mmcv_fixture_all_ones_gradient_differs_where_models_md_says():
    x = torch.tensor(MMCV_INPUT, requires_grad=True)
    out = tin_shift_reference(x, torch.tensor(MMCV_SHIFT))
    out.backward(torch.ones_like(out))
    # sample 0, group 0 (shift +1): mmcv's fixture expects 0 at t=0, the adjoint gives 1
    assert torch.all(x.grad[0, 0, 0:2] == 1.0)
    assert torch.all(x.grad[0, 3, 0:2] == 0.0)


def test_shifts_at_least_T_give_zeros():
    x = torch.randn(2, 4, 4, 3)
    for s in (4, -4, 9, -1000, 2**40):
        shift = torch.full((2, 2), s, dtype=torch.long)
        assert torch.all(ops.tin_shift(x, shift) == 0)
        assert torch.all(tin_shift_reference(x, shift) == 0)


# --------------------------------------------------------------------------------------------
# native == reference


@st.composite
def cases(draw):
    n = draw(st.integers(1, 3))
    t = draw(st.integers(1, 9))
    g = draw(st.integers(1, 4))
    c = g * draw(st.integers(1, 4))
    hw = draw(st.integers(1, 17))
    shifts = draw(st.lists(st.integers(-2 * t - 1, 2 * t + 1), min_size=n * g, max_size=n * g))
    dtype = draw(st.sampled_from(DTYPES))
    int_dtype = draw(st.sampled_from([torch.int32, torch.int64]))
    seed = draw(st.integers(0, 2**31 - 1))
    return n, t, c, hw, g, shifts, dtype, int_dtype, seed


@requires_native
@settings(max_examples=150, deadline=None)
@given(cases())
def test_native_equals_reference_exactly(case):
    n, t, c, hw, g, shifts, dtype, int_dtype, seed = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, t, c, hw, generator=gen).to(dtype)
    shift = torch.tensor(shifts, dtype=int_dtype).view(n, g)
    assert torch.equal(native_op(x, shift), tin_shift_reference(x, shift))
    grad = torch.randn(n, t, c, hw, generator=gen).to(dtype)
    assert torch.equal(
        torch.ops.vidtempo.tin_shift_backward(grad, shift),
        tin_shift_backward_reference(grad, shift),
    )
    # and the autograd path of the public function
    xr = x.clone().requires_grad_()
    ops.tin_shift(xr, shift).backward(grad)
    assert torch.equal(xr.grad, tin_shift_backward_reference(grad, shift))


@requires_native
def test_non_contiguous_input():
    base = torch.randn(2, 3, 8, 6)
    x = base.permute(0, 2, 1, 3).permute(0, 2, 1, 3)[..., ::2]  # stride 2 along HW
    assert not x.is_contiguous()
    shift = torch.tensor([[1, -1], [2, 0]])
    assert torch.equal(native_op(x, shift), tin_shift_reference(x.contiguous(), shift))
    xt = torch.randn(2, 8, 3, 6).transpose(1, 2)  # (N, T, C, HW) view of a (N, C, T, HW) tensor
    assert torch.equal(native_op(xt, shift), tin_shift_reference(xt, shift))


@pytest.mark.parametrize("impl", ["reference", pytest.param("native", marks=requires_native)])
def test_gradcheck_float64(impl):
    fn = tin_shift_reference if impl == "reference" else native_op
    x = torch.randn(2, 5, 6, 3, dtype=torch.float64, requires_grad=True)
    shift = torch.tensor([[2, -1, 0], [-5, 1, 3]], dtype=torch.int32)
    assert torch.autograd.gradcheck(lambda v: fn(v, shift), (x,))
    assert torch.autograd.gradgradcheck(lambda v: fn(v, shift), (x,))


@requires_native
def test_opcheck():
    x = torch.randn(2, 4, 8, 5, requires_grad=True)
    shift = torch.tensor([[1, -2], [0, 3]], dtype=torch.int32)
    torch.library.opcheck(torch.ops.vidtempo.tin_shift.default, (x, shift))
    torch.library.opcheck(torch.ops.vidtempo.tin_shift_backward.default, (x.detach(), shift))


class _Interlace(torch.nn.Module):
    """A small module built like TIN's linear sampler: floor/ceil shifts mixed by weights."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(6, 6)

    def forward(self, x, offset):  # x (N, T, C, HW), offset (N, G) float
        k0 = offset.floor().int()
        lam = (offset - k0).repeat_interleave(x.shape[2] // offset.shape[1], dim=1)[
            :, None, :, None
        ]
        y = (1 - lam) * ops.tin_shift(x, k0) + lam * ops.tin_shift(x, k0 + 1)
        return self.proj(y)


@requires_native
@pytest.mark.slow
def test_torch_compile_fullgraph_same_output_and_gradients():
    torch.manual_seed(0)
    mod = _Interlace()
    x = torch.randn(2, 4, 8, 6, requires_grad=True)
    offset = torch.tensor([[0.5, -1.25], [1.75, 0.0]])
    eager = mod(x, offset)
    eager.sum().backward()
    g_eager = x.grad.clone()
    x.grad = None
    compiled = torch.compile(mod, fullgraph=True)
    out = compiled(x, offset)
    out.sum().backward()
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(x.grad, g_eager)


# --------------------------------------------------------------------------------------------
# TIN's fused sampler (vidtempo::tin_sample): the composite's maths in one CPU call

SAMPLER_CASES = [  # (N, T, C, H, W, G), offsets scaled so that some leave the clip entirely
    (2, 8, 8, 3, 3, 4),
    (3, 5, 4, 1, 1, 2),
    (2, 8, 16, 4, 4, 4),
    (1, 3, 6, 2, 5, 3),
]


def _sampler_inputs(case, dtype, scale=3.0):
    n, t, c, h, w, g = case
    data = torch.randn(n, t, c, h, w, dtype=dtype, requires_grad=True)
    offset = (torch.randn(n, g, dtype=dtype) * scale).requires_grad_()
    weight = (2 * torch.rand(n, t, g, dtype=dtype)).requires_grad_()
    return data, offset, weight


@requires_native
@pytest.mark.parametrize("case", SAMPLER_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_sampler_equals_the_composite(case, dtype):
    """Output and the gradients of data, offsets and gates equal the composite of tin_shift and
    elementwise ops that the fused kernel replaces (to float32 rounding), with and without gates."""
    from vidtempo.models.tin import composite_linear_sampler, linear_sampler

    torch.manual_seed(sum(case))
    data, offset, weight = _sampler_inputs(case, dtype)
    assert ops.fused_sampler(data)
    for gates in (weight, None):
        inputs = (data, offset) if gates is None else (data, offset, gates)
        fused, comp = linear_sampler(data, offset, gates), composite_linear_sampler(data, offset, gates)
        grad = torch.randn_like(fused)
        g_fused = torch.autograd.grad(fused, inputs, grad)
        g_comp = torch.autograd.grad(comp, inputs, grad)
        torch.testing.assert_close(fused, comp)
        for a, b in zip(g_fused, g_comp):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@requires_native
def test_fused_sampler_gradcheck_and_opcheck():
    torch.manual_seed(0)
    data, offset, weight = _sampler_inputs((2, 4, 4, 2, 1, 2), torch.float64, scale=1.5)
    flat = data.detach().reshape(2, 4, 4, 2).requires_grad_()
    assert torch.autograd.gradcheck(torch.ops.vidtempo.tin_sample, (flat, offset, weight))
    torch.library.opcheck(torch.ops.vidtempo.tin_sample.default,
                          (flat.detach().float(), offset.detach().float(), weight.detach().float()))


@requires_native
def test_fused_sampler_is_left_where_it_has_no_kernel(monkeypatch):
    """Half precision (and CUDA, and VIDTEMPO_TIN_SHIFT=reference) run the composite."""
    assert not ops.fused_sampler(torch.zeros(1, 2, 4, 1, 1, dtype=torch.bfloat16))
    monkeypatch.setenv("VIDTEMPO_TIN_SHIFT", "reference")
    assert not ops.fused_sampler(torch.zeros(1, 2, 4, 1, 1))


@requires_native
def test_fused_sampler_says_which_shapes_it_wants():
    x = torch.zeros(2, 4, 8, 3)
    with pytest.raises(ValueError, match=r"weight \[N, T, G\]"):
        torch.ops.vidtempo.tin_sample(x, torch.zeros(2, 2), torch.zeros(2, 3, 2))
    with pytest.raises(ValueError, match="multiple of the number of groups"):
        torch.ops.vidtempo.tin_sample(x, torch.zeros(2, 3), torch.zeros(2, 4, 3))
    with pytest.raises(TypeError, match="offset and weight must have the input's dtype"):
        torch.ops.vidtempo.tin_sample(x, torch.zeros(2, 2, dtype=torch.float64),
                                      torch.zeros(2, 4, 2))


# --------------------------------------------------------------------------------------------
# errors, fallback and build


BAD = [
    (torch.randn(2, 4, 8), torch.zeros(2, 2, dtype=torch.int32), ValueError, "must be 4-D"),
    (torch.randn(2, 4, 8, 3), torch.zeros(2, dtype=torch.int32), ValueError, "must be 2-D"),
    (torch.randn(2, 4, 8, 3), torch.zeros(2, 2), TypeError, "integer tensor"),
    (torch.randn(2, 4, 8, 3), torch.zeros(3, 2, dtype=torch.int32), ValueError, "N = 2"),
    (torch.randn(2, 4, 8, 3), torch.zeros(2, 3, dtype=torch.int32), ValueError, "multiple of"),
    (torch.randn(2, 4, 8, 3), torch.zeros(2, 0, dtype=torch.int32), ValueError, "multiple of"),
    (torch.zeros(2, 4, 8, 3, dtype=torch.int32), torch.zeros(2, 2, dtype=torch.int32),
     TypeError, "float32, float64"),
    (torch.randn(2, 4, 8, 3, device="meta"), torch.zeros(2, 2, dtype=torch.int32), ValueError,
     "move it with shift.to"),
]  # fmt: skip


@pytest.mark.parametrize("x,shift,exc,msg", BAD)
def test_bad_input_public_function(x, shift, exc, msg):
    with pytest.raises(exc, match=msg):
        ops.tin_shift(x, shift)


@requires_native
@pytest.mark.parametrize("x,shift,exc,msg", BAD[:-1])
def test_bad_input_compiled_op(x, shift, exc, msg):
    with pytest.raises(exc, match=msg):
        native_op(x, shift)


def test_fallback_warns_once_and_matches_reference(monkeypatch):
    monkeypatch.setattr(native, "_state", {"ops": None, "why": "vidtempo._C was not built: test"})
    monkeypatch.setattr(ops, "_warned", set())
    monkeypatch.delenv("VIDTEMPO_TIN_SHIFT", raising=False)
    x = torch.randn(1, 3, 4, 2)
    shift = torch.tensor([[1, -1]])
    with pytest.warns(RuntimeWarning, match="vidtempo._C was not built: test"):
        out = ops.tin_shift(x, shift)
    assert torch.equal(out, tin_shift_reference(x, shift))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.tin_shift(x, shift)  # no second warning
    monkeypatch.setenv("VIDTEMPO_TIN_SHIFT", "native")
    with pytest.raises(RuntimeError, match="VIDTEMPO_TIN_SHIFT=native but vidtempo._C"):
        ops.tin_shift(x, shift)


def test_backend_env_var(monkeypatch):
    monkeypatch.setenv("VIDTEMPO_TIN_SHIFT", "reference")
    assert ops.backend() == "reference"
    monkeypatch.setenv("VIDTEMPO_TIN_SHIFT", "fast")
    with pytest.raises(ValueError, match="use 'native', 'reference'"):
        ops.backend()
    if native.load() is not None:
        monkeypatch.setenv("VIDTEMPO_TIN_SHIFT", "native")
        assert ops.backend() == "native"
        monkeypatch.delenv("VIDTEMPO_TIN_SHIFT")
        assert ops.backend() == "native"


@requires_native
def test_cuda_tensor_without_cuda_kernel_is_an_error_saying_how_to_rebuild(monkeypatch):
    monkeypatch.delenv("VIDTEMPO_TIN_SHIFT", raising=False)
    monkeypatch.setattr(native, "has_cuda_kernel", lambda: False)

    class FakeCuda(torch.Tensor):
        @property
        def is_cuda(self):
            return True

    x = torch.randn(1, 2, 2, 2).as_subclass(FakeCuda)
    with pytest.raises(RuntimeError, match="built without its CUDA kernel.*VIDTEMPO_BUILD_CUDA=1"):
        ops.tin_shift(x, torch.zeros(1, 1, dtype=torch.int32))


@requires_native
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on this machine")
def test_cuda_kernel_was_built_when_nvcc_is_available():
    assert native.has_cuda_kernel()


# --------------------------------------------------------------------------------------------
# GPU (run where a CUDA device exists)


@gpu
@requires_cuda
@requires_native
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw", [49, 50, 3136])
def test_cuda_equals_reference(dtype, hw):
    g = torch.Generator().manual_seed(hw)
    x = torch.randn(3, 8, 64, hw, generator=g).to(dtype)
    shift = torch.randint(-9, 10, (3, 4), generator=g, dtype=torch.int32)
    grad = torch.randn(3, 8, 64, hw, generator=g).to(dtype)
    xc = x.cuda().requires_grad_()
    out = ops.tin_shift(xc, shift.cuda())
    out.backward(grad.cuda())
    assert torch.equal(out.cpu(), tin_shift_reference(x, shift))
    assert torch.equal(xc.grad.cpu(), tin_shift_backward_reference(grad, shift))
    # CUDA kernel = CPU kernel = reference, forward and backward
    assert torch.equal(out.cpu(), native_op(x, shift))
    assert torch.equal(xc.grad.cpu(), torch.ops.vidtempo.tin_shift_backward(grad, shift))


@gpu
@requires_cuda
@requires_native
def test_cuda_gradcheck_and_opcheck():
    x = torch.randn(2, 5, 8, 7, dtype=torch.float64, device="cuda", requires_grad=True)
    shift = torch.tensor([[2, -1], [-6, 3]], dtype=torch.int32, device="cuda")
    assert torch.autograd.gradcheck(lambda v: native_op(v, shift), (x,))
    torch.library.opcheck(torch.ops.vidtempo.tin_shift.default, (x, shift))


@gpu
@requires_cuda
@requires_native
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_non_contiguous_input(dtype):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(2, 64, 8, 50, generator=g).to(dtype).cuda()
    x = base.transpose(1, 2)  # (2, 8, 64, 50), not contiguous
    shift = torch.tensor([[1, -3, 9, 0], [-8, 2, -1, 4]], dtype=torch.int32, device="cuda")
    assert not x.is_contiguous()
    assert torch.equal(ops.tin_shift(x, shift).cpu(), tin_shift_reference(x.cpu(), shift.cpu()))


@gpu
@requires_cuda
@requires_native
@pytest.mark.slow
def test_cuda_beyond_2_pow_31_elements():
    """[2, 8, 16, 2^24 + 1] in bfloat16: 4.3e9 elements (8.6 GB), more than an int32 indexes.
    Each (n, group) is filled with a value of its own source frame, so the output checks by
    slices: frame t of a group shifted by s holds frame t - s's value, or zero."""
    n, t, c, hw = 2, 8, 16, 2**24 + 1  # 4 groups of 4 channels
    assert n * t * c * hw > 2**31
    values = torch.arange(n * t * c, dtype=torch.float32, device="cuda").view(n, t, c, 1) % 251
    x = values.to(torch.bfloat16).expand(n, t, c, hw).contiguous()
    shift = torch.tensor([[1, -2, 8, -9], [0, 3, -1, 2]], dtype=torch.int32, device="cuda")
    for op, sign in ((torch.ops.vidtempo.tin_shift, 1), (torch.ops.vidtempo.tin_shift_backward, -1)):
        out = op(x, shift)
        per_channel = out[..., [0, hw // 2, hw - 1]]  # first, middle, last element of each row
        expected = tin_shift_reference(values.to(torch.bfloat16).cpu(), sign * shift.cpu())
        assert torch.equal(per_channel.cpu(), expected.expand(-1, -1, -1, 3))
        del out
    torch.cuda.empty_cache()


@gpu
@requires_cuda
@requires_native
@pytest.mark.slow
def test_cuda_torch_compile_of_a_tin_block():
    """A whole TemporalInterlace (offset and weight nets, linear sampler, two tin_shift calls)
    under torch.compile on the GPU: the same output and input gradients as eager."""
    from vidtempo.models.tin import TemporalInterlace

    torch.manual_seed(0)
    block = TemporalInterlace(64, num_segments=8, shift_div=4).cuda()
    x = torch.randn(16, 64, 14, 14, device="cuda", requires_grad=True)  # 2 videos × 8 frames
    eager = block(x)
    eager.square().sum().backward()
    g_eager = x.grad.clone()
    x.grad = None
    out = torch.compile(block)(x)
    out.square().sum().backward()
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, g_eager, rtol=1e-4, atol=1e-4)
