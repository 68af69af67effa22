"""Regenerates ``src/turnstile/v1/turnstile_pb2.py`` and ``.pyi`` from
``proto/turnstile/v1/turnstile.proto`` with ``grpcio-tools`` (protoc as a
Python package: no system ``protoc``).

Run it with the pinned generator so that the code stays loadable by every
protobuf runtime from 5.26.1 on (generated code checks that the runtime is
not older than the generator)::

    python -m venv /tmp/gen && /tmp/gen/bin/pip install grpcio-tools==1.64.1
    /tmp/gen/bin/python clients/python/tools/generate.py

``tests/test_generated.py`` fails when the committed code no longer
describes the ``.proto``.
"""

from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent.parent / "proto"
OUT = HERE.parent / "src"


def main() -> int:
    """Runs protoc (from grpcio-tools) on the .proto."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    return int(
        protoc.main(
            [
                "protoc",
                f"-I{PROTO_ROOT}",
                f"--python_out={OUT}",
                f"--pyi_out={OUT}",
                "turnstile/v1/turnstile.proto",
            ]
        )
    )


if __name__ == "__main__":
    sys.exit(main())
