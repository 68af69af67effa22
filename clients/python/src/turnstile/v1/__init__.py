"""Message classes generated from ``proto/turnstile/v1/turnstile.proto``.

``turnstile_pb2`` is produced by ``tools/generate.py`` (``grpcio-tools``,
never a system ``protoc``) and committed; ``tests/test_generated.py`` fails
when it no longer matches the ``.proto``.
"""
