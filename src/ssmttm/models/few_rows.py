"""Linear layers applied to a handful of rows (one decode step), the way CPU BLAS handles best.

`layer(x)` computes x @ W^T. For x (B, in) with few rows, MKL's matrix product then repacks the whole weight W on
every call, while W @ x^T streams W once as it is stored: measured 1.7-3x faster for B <= 8 on the decode step's
shapes (256 -> 1168, 512 -> 256, 256 -> 1025), the same beyond about 16 rows. The result is the transpose of a
(out, B) product: a (B, out) view with strides (1, B), equal to layer(x) up to float rounding (another summation
order). Training and prefill keep `layer(x)`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FEW_ROWS = 8


def linear_few_rows(layer: nn.Linear, x: Tensor) -> Tensor:
    """layer(x) for x (B, in): weight @ x^T when B <= FEW_ROWS on CPU, else layer(x)."""
    if x.is_cuda or x.dim() != 2 or x.shape[0] > FEW_ROWS or x.dtype != layer.weight.dtype:
        return layer(x)
    if layer.bias is None:
        return torch.mm(layer.weight, x.t()).t()  # (B, out)
    return torch.addmm(layer.bias[:, None], layer.weight, x.t()).t()
