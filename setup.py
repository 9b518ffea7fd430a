"""The C part of skyfill: the repo decoder's hot path (src/skyfill/atproto/_fastrepo.c).

Everything else is in pyproject.toml. The module links OpenSSL's libcrypto for SHA-256
(Debian: libssl-dev); skyfill runs without it, on the pure-Python decoder.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "skyfill.atproto._fastrepo",
            ["src/skyfill/atproto/_fastrepo.c"],
            depends=[
                "src/skyfill/atproto/_fastrepo_slice.h",
                "src/skyfill/atproto/_fastrepo_event.h",
            ],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wall"],
            optional=True,  # without a C compiler or libcrypto, skyfill decodes in Python
        )
    ]
)
