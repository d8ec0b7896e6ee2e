"""Build hook for the optional Cython codec; all metadata lives in pyproject.toml."""

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import BaseError, CCompilerError, CompileError

# FASTFORWARD_NO_EXTENSIONS builds a pure-Python package; FASTFORWARD_REQUIRE_EXTENSION makes a
# failed compile fatal instead of silently shipping a wheel without the codec (CI, cibuildwheel).
NO_EXTENSIONS = bool(os.environ.get("FASTFORWARD_NO_EXTENSIONS")) or (
    sys.implementation.name != "cpython"
)
REQUIRE_EXTENSION = bool(os.environ.get("FASTFORWARD_REQUIRE_EXTENSION"))
CYTHON_TRACE = bool(os.environ.get("FASTFORWARD_CYTHON_TRACE"))

FALLBACK_NOTICE = (
    "fastforward: building without the compiled codec ({why}); the pure-Python codec will be "
    "used, which is correct but several times slower. Install a C compiler and the Python "
    "headers and reinstall to get it, or set FASTFORWARD_REQUIRE_EXTENSION=1 to make this fatal."
)


def notice(why: str) -> None:
    # stderr, framed, so it stands out in `pip install -v` and `python -m build` output.
    bar = "*" * 78
    print(f"\n{bar}\n{FALLBACK_NOTICE.format(why=why)}\n{bar}\n", file=sys.stderr, flush=True)


class BuildExt(build_ext):
    """build_ext that says loudly when the optional codec could not be compiled."""

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except (CCompilerError, CompileError, BaseError) as exc:
            # The same errors setuptools forgives for an optional extension; it skips it after us.
            if ext.optional:
                notice(f"compiling {ext.name} failed: {exc}")
            raise


def codec_extension() -> Extension:
    # No cythonize(): Cython is a build requirement, so setuptools' build_ext compiles the .pyx
    # itself, and optional=True survives (cythonize() would drop it).
    # One extension from one .pyx; its declarations (.pxd), the parts it includes (.pxi) and
    # the C header are listed so that a change to any of them rebuilds it.
    ext = Extension(
        "fastforward._codec",
        ["src/fastforward/_codec.pyx"],
        depends=sorted(
            p.as_posix()
            for pattern in ("_codec*.pxd", "_codec_*.pxi", "*.h")
            for p in Path("src/fastforward").glob(pattern)
        ),
        include_dirs=["src/fastforward"],
        extra_compile_args=["-O3"] if sys.platform != "win32" else [],
        optional=not REQUIRE_EXTENSION,
    )
    if CYTHON_TRACE:
        ext.cython_directives = {"linetrace": True}
        ext.define_macros = [("CYTHON_TRACE", "1")]
    return ext


if NO_EXTENSIONS and {"bdist_wheel", "build", "build_ext", "editable_wheel"} & set(sys.argv):
    reason = (
        "FASTFORWARD_NO_EXTENSIONS is set"
        if sys.implementation.name == "cpython"
        else (f"{sys.implementation.name} is not CPython")
    )
    notice(reason)

setup(
    ext_modules=[] if NO_EXTENSIONS else [codec_extension()],
    cmdclass={"build_ext": BuildExt},
)
