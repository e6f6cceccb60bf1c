"""Builds vidtempo._C, the tin_shift operator library, during the normal install.

The CPU kernel is always built. The CUDA kernel is built when a CUDA toolkit is found (or
VIDTEMPO_BUILD_CUDA=1 insists; =0 skips it). CUDA_HOME must name the toolkit root, the folder
whose lib/ or lib64/ holds libcudart; when it is unset we look for that folder instead of letting
torch guess the parent of the `nvcc` on PATH (a wrapper script in /usr/local/bin breaks that
guess). The default architectures are sm_80 and sm_90 with PTX; TORCH_CUDA_ARCH_LIST overrides.
"""

import glob
import os
import shutil
from pathlib import Path

from setuptools import setup


def find_cuda_home() -> str | None:
    def is_toolkit(root: Path) -> bool:
        return (root / "bin" / "nvcc").exists() and any(
            glob.glob(str(root / lib / "libcudart.so*")) for lib in ("lib64", "lib")
        )

    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    candidates = [Path("/usr/local/cuda"), *map(Path, sorted(glob.glob("/usr/local/cuda-*")))]
    nvcc = shutil.which("nvcc")
    if nvcc:
        text = Path(nvcc).read_text(errors="ignore") if Path(nvcc).stat().st_size < 4096 else ""
        for word in text.split():  # a wrapper script: exec /usr/local/cuda-13.0/bin/nvcc "$@"
            if word.endswith("/bin/nvcc"):
                candidates.insert(0, Path(word).parent.parent)
        candidates.insert(0, Path(os.path.realpath(nvcc)).parent.parent)
    for root in candidates:
        if is_toolkit(root):
            return str(root)
    return None


want_cuda = os.environ.get("VIDTEMPO_BUILD_CUDA", "auto").lower()
cuda_home = None if want_cuda in ("0", "no", "false") else find_cuda_home()
if want_cuda in ("1", "yes", "true") and cuda_home is None:
    raise SystemExit("VIDTEMPO_BUILD_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME")
if cuda_home:
    os.environ["CUDA_HOME"] = cuda_home
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")

# Imported only now: torch.utils.cpp_extension reads CUDA_HOME when it is imported.
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

sources = ["cuda/tin_shift_schema.cpp", "cuda/tin_shift_cpu.cpp", "cuda/tin_sample_cpu.cpp",
           "cuda/tin_sample_autograd.cpp"]
cxx_flags = ["-O3", "-fopenmp", "-DNDEBUG"]
if cuda_home:
    print(f"vidtempo: building the CUDA kernel with the toolkit in {cuda_home}")
    ext = CUDAExtension(
        "vidtempo._C",
        sources + ["cuda/tin_shift_cuda.cu"],
        extra_compile_args={
            "cxx": cxx_flags,
            "nvcc": ["-O3", "-DNDEBUG", "--expt-relaxed-constexpr"],
        },
        extra_link_args=["-fopenmp"],
    )
else:
    print("vidtempo: no CUDA toolkit found, building the CPU kernel only")
    ext = CppExtension(
        "vidtempo._C", sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"]
    )

setup(
    ext_modules=[ext],
    cmdclass={
        "build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)
    },
)
