"""Build of cbp's C extensions.

Each extension compiles the pure-C routines of src_c/ together with one
Cython binding.  The BLAS comes from scipy.linalg.cython_blas at import
time, so nothing links a BLAS library.  Flags stay portable: -O3, never
-march=native (illegal instructions on other CPUs) nor -ffast-math (it
would change floating-point behaviour of the whole process).

Set CBP_SANITIZE=1 to build with AddressSanitizer and UBSan (see
tools/sanitize.sh); CBP_DEBUG=1 for -O0 -g.
"""
import os
import sys
from glob import glob

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

C_SOURCES = sorted(glob("src_c/*.c"))
C_HEADERS = sorted(glob("src_c/*.h"))


class BuildExt(build_ext):
    """Choose compiler flags by compiler family."""

    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            args, link = ["/O2", "/utf-8"], []  # sources are UTF-8 (comments)
        else:
            # -g0 overrides the -g that Python's own CFLAGS (sysconfig) put
            # first: debug info would triple the wheel (1.4 MB instead of
            # under 0.5 MB); CBP_DEBUG builds keep it.
            # -fno-math-errno: sqrt, exp… need not set errno (which nothing
            # here reads), so sqrtf becomes one instruction and the optimizer
            # loops vectorize; results are unchanged (unlike -ffast-math).
            # -fno-trapping-math: nothing here enables or reads floating-point
            # exception flags, so the compiler may evaluate both sides of a
            # select, and loops with one (softmax's exp) vectorize; every
            # result is still rounded as IEEE 754 says.
            # -ffp-contract=off: no a·b + c fused into one FMA, even where the
            # target has FMA (aarch64, or -march in CFLAGS): every build and
            # both clones of a loop round alike, and the finiteness checks
            # round exactly as the updates they vouch for.
            args = ["-O3", "-g0", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off",
                    "-Wall", "-Wno-unused-function"]
            link = []
            if os.environ.get("CBP_DEBUG"):
                args = ["-O0", "-g", "-Wall", "-Wno-unused-function"]
            if os.environ.get("CBP_SANITIZE"):
                san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                       "-fno-sanitize-recover=undefined"]
                args = ["-O1", "-g"] + san
                link = san
            # src_c/pool.c: cbp's worker threads (POSIX threads).
            args = args + ["-pthread"]
            link = link + ["-pthread"]
        for ext in self.extensions:
            ext.extra_compile_args = args
            ext.extra_link_args = link
        super().build_extensions()


def extension(name, numpy_api=False):
    include_dirs = ["src_c"]
    if numpy_api:
        import numpy

        include_dirs.append(numpy.get_include())
    return Extension(
        f"cbp.{name}",
        sources=[f"cbp/{name}.pyx"] + C_SOURCES,
        include_dirs=include_dirs,
        depends=C_HEADERS + ["cbp/_capi.pxd"],
        libraries=[] if sys.platform == "win32" else ["m"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )


setup(
    ext_modules=cythonize(
        [extension("_ops"), extension("_engine", numpy_api=True)],
        compiler_directives={"language_level": 3},
    ),
    cmdclass={"build_ext": BuildExt},
)
