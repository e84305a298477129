"""tests/remote: real object stores (moto's S3 server, a GCS emulator, on 127.0.0.1) and the default local remote."""

from tests.remote.gcs_server import gcs_server  # noqa: F401  (module-scoped fixture: GCS emulator, cached GCS env)
from tests.remote.remote_project import moto_endpoint  # noqa: F401  (module-scoped fixture)
