"""Import hear21passt's PaSST pieces where its `timm` dependency cannot be installed (the CPU environment).

hear21passt's own network code needs only torch and torchaudio; it imports `timm` for one thing,
`timm.models._hub.download_cached_file`, which fetches release weights when `get_model(pretrained=True)`. The project
never calls that (weights are local files named in params, loaded by ssmttm.evaluate.embeddings.Passt), and `timm`
imports torchvision at import time, whose only PyPI wheel for torch 2.13.0 is a CUDA build that cannot load beside
the CPU torch ("operator torchvision::nms does not exist"). So `make setup` installs hear21passt without its
dependencies, and while hear21passt imports, a missing `timm` is answered by a download function that refuses. Where
timm is installed (a GPU machine with the `eval` extra), it is used as is.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from typing import Any

from ssmttm.errors import UserFacingError

_TIMM_MODULES = ("timm", "timm.models", "timm.models._hub")


def _refuse_download(url: str, *args: Any, **kwargs: Any) -> str:
    raise UserFacingError(
        f"hear21passt asked to download {url}: PaSST weights are read only from evaluate.models.passt(_10s)."
        "weights_path; point it at the local checkpoint"
    )


@contextlib.contextmanager
def _timm_download_refused() -> Iterator[None]:
    """While hear21passt imports: modules timm, timm.models, timm.models._hub holding only a refusing
    download_cached_file, removed again afterwards (nothing else sees a `timm`)."""
    if importlib.util.find_spec("timm") is not None:
        yield
        return
    modules = {name: types.ModuleType(name) for name in _TIMM_MODULES}
    modules["timm.models._hub"].download_cached_file = _refuse_download
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in modules.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def import_hear21passt_models() -> types.ModuleType:
    """hear21passt.models.passt (the PaSST network, its arches and get_model)."""
    with _timm_download_refused():
        return importlib.import_module("hear21passt.models.passt")


def import_hear21passt() -> tuple[Any, Any]:
    """(AugmentMelSTFT, PasstBasicWrapper) from hear21passt: its mel frontend and the wrapper around the network."""
    with _timm_download_refused():
        preprocess = importlib.import_module("hear21passt.models.preprocess")
        wrapper = importlib.import_module("hear21passt.wrapper")
    return preprocess.AugmentMelSTFT, wrapper.PasstBasicWrapper
