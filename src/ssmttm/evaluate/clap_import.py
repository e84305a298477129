"""Import laion_clap where torchvision's compiled operators cannot load (the CPU environment).

laion_clap imports torchvision at import time, and its fusion model resizes the mel spectrogram of long clips with
`torchvision.transforms.Resize` (pure torch: `interpolate`). torchvision's only PyPI wheel for torch 2.13.0 is a
CUDA build whose compiled operators (`torchvision/_C.so`: nms, roi_align, ...) cannot load beside the CPU torch, and
then `import torchvision` stops at its fake-tensor registration of `torchvision::nms` ("operator torchvision::nms
does not exist"). So `make setup` keeps that torchvision apart from the environment (scripts/setup_env.sh:
.venv/clap-deps, where transformers, diffusers and lightning never see it), and here, only while laion_clap is
loaded: that folder joins the import path, and when the compiled operators do not load, the two operator schemas
that torchvision registers unconditionally are declared (never implemented: laion_clap calls no detection operator,
and calling one raises torch's "no kernel" error). Where torchvision imports as is (a GPU machine with the `eval`
extra), it is used as is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

# Beside the environment's site-packages: <venv>/clap-deps (scripts/setup_env.sh writes it).
CLAP_DEPS_DIR = Path(sys.prefix) / "clap-deps"
# The operators torchvision 0.28's _meta_registrations registers without checking that its library loaded.
_UNCONDITIONAL_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)
_declared: list[Any] = []  # the torch.library.Library that holds the schemas lives as long as the process


def _compiled_operators_load(package_dir: Path) -> bool:
    import torch

    library = package_dir / "_C.so"
    try:
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError):
        return False
    return True


def _prepare_torchvision() -> None:
    if "torchvision" in sys.modules:
        return
    if CLAP_DEPS_DIR.is_dir() and str(CLAP_DEPS_DIR) not in sys.path:
        sys.path.append(str(CLAP_DEPS_DIR))  # after site-packages: an installed torchvision wins
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return  # laion_clap's own import error then names torchvision
    if not _compiled_operators_load(Path(spec.submodule_search_locations[0])):
        import torch

        library = torch.library.Library("torchvision", "DEF")
        for schema in _UNCONDITIONAL_SCHEMAS:
            library.define(schema)
        _declared.append(library)


def import_laion_clap() -> Any:
    """The laion_clap module (it reads the tokenizers of roberta-base, bert-base-uncased and facebook/bart-base
    from the Hugging Face cache while importing)."""
    _prepare_torchvision()
    return importlib.import_module("laion_clap")
