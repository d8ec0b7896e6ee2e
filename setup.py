"""Build hook for the optional Cython codec; all metadata lives in pyproject.toml."""

import os
import sys

from setuptools import Extension, setup

# FASTFORWARD_NO_EXTENSIONS builds a pure-Python package; FASTFORWARD_REQUIRE_EXTENSION makes a
# failed compile fatal instead of silently shipping a wheel without the codec (CI, cibuildwheel).
NO_EXTENSIONS = bool(os.environ.get("FASTFORWARD_NO_EXTENSIONS")) or (
    sys.implementation.name != "cpython"
)
REQUIRE_EXTENSION = bool(os.environ.get("FASTFORWARD_REQUIRE_EXTENSION"))
CYTHON_TRACE = bool(os.environ.get("FASTFORWARD_CYTHON_TRACE"))


def codec_extension() -> Extension:
    # No cythonize(): Cython is a build requirement, so setuptools' build_ext compiles the .pyx
    # itself, and optional=True survives (cythonize() would drop it).
    ext = Extension(
        "fastforward._codec",
        ["src/fastforward/_codec.pyx"],
        include_dirs=["src/fastforward"],
        extra_compile_args=["-O3"] if sys.platform != "win32" else [],
        optional=not REQUIRE_EXTENSION,
    )
    if CYTHON_TRACE:
        ext.cython_directives = {"linetrace": True}
        ext.define_macros = [("CYTHON_TRACE", "1")]
    return ext


setup(ext_modules=[] if NO_EXTENSIONS else [codec_extension()])
