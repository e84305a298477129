"""tests/remote: a real object store (moto's S3 server on 127.0.0.1) and the repository's default local remote."""

from tests.remote.remote_project import moto_endpoint  # noqa: F401  (module-scoped fixture)
