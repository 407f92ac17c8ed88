"""Build configuration beyond pyproject.toml: the optional compiled drain.

``mcastio._platform.linux._cdrain`` is a C extension (``recvmmsg``/``sendmmsg`` and building the
``Datagram`` values). It is optional: where no compiler or no Python headers
exist, the build says so and installs the pure-Python package, which reads with
``recvmmsg`` through ctypes instead (see docs/explanation/performance.md).
"""

import sys

from setuptools import Extension, setup

# recvmmsg, sendmmsg and UDP_SEGMENT are Linux interfaces: elsewhere, the pure path.
ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(
        Extension(
            "mcastio._platform.linux._cdrain",
            sources=[
                "mcastio/_platform/linux/_cdrain.c",
                "mcastio/_platform/linux/_csend.c",
            ],
            depends=["mcastio/_platform/linux/_cdrain.h"],
            define_macros=[("_GNU_SOURCE", "1")],
            extra_compile_args=["-O2", "-std=c11", "-Wall"],
            optional=True,
        )
    )

setup(ext_modules=ext_modules)
