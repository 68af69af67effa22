"""The committed message code describes the .proto as it is now."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2

from turnstile.v1 import turnstile_pb2
from conftest import REPO


def test_generated_code_matches_the_proto() -> None:
    # Compile the .proto with grpcio-tools (protoc as a Python package) into
    # a descriptor set and compare it with the one the committed code carries.
    with tempfile.TemporaryDirectory() as d:
        out = pathlib.Path(d) / "set.pb"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{REPO / 'proto'}",
                f"--descriptor_set_out={out}",
                "turnstile/v1/turnstile.proto",
            ],
            check=True,
        )
        fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    committed = descriptor_pb2.FileDescriptorProto.FromString(turnstile_pb2.DESCRIPTOR.serialized_pb)
    # protoc fills json_name in a descriptor set, not in generated code.
    for message in fresh.message_type:
        _drop_json_names(message)
    assert committed == fresh, "turnstile_pb2.py is stale: run clients/python/tools/generate.py"


def _drop_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        field.ClearField("json_name")
    for nested in message.nested_type:
        _drop_json_names(nested)
