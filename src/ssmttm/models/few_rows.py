"""Linear layers applied to a handful of rows (one decode step), the way a CPU handles best.

`layer(x)` computes x @ W^T. For x (B, in) with few rows the product reads all of W for very little arithmetic, so
its speed is how fast W streams through the core:
- eagerly, MKL's matrix product repacks W on every call, while W @ x^T streams W once as it is stored: measured
  1.7-3x faster for B <= 8 on the decode step's shapes (256 -> 1168, 512 -> 256, 256 -> 1025), the same beyond about
  16 rows. The result is the transpose of a (out, B) product: a (B, out) view with strides (1, B).
- inside torch.compile (the compiled decode step), up to REDUCE_ROWS rows and for weights up to REDUCE_MAX_WEIGHT
  elements, one multiply-sum over `in` per row. Inductor fuses the B reductions into one vectorised loop that reads
  each row of W once for all B rows; `as_strided` makes it store x once instead of recomputing x (the RMSNorm before
  the product, say) for every row of W. MKL's 2-row product streams 7-18 GB/s on this project's 2-core AMD EPYC (MKL
  2024.2, AVX2) where a plain sum reaches 45-53 GB/s from L3: the nine products of the issue-12 step (2 rows) took
  545 -> 449 us on 1 thread and 624 -> 287 us on 2, the paper-like shape's (66 MB of weights) 12.9 -> 7.0 ms. In
  the whole compiled step, though, the paper-like in_proj (3088 x 512, 6.3 MB) as a reduction made the step vary
  between 17 and 40 ms from run to run; left to MKL it is steady, hence REDUCE_MAX_WEIGHT. From 8 rows on, MKL's
  blocked product wins again.
Either way the result equals layer(x) up to float rounding (another summation order, about 1e-6 relative).
Training and prefill keep `layer(x)`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FEW_ROWS = 8
REDUCE_ROWS = 4  # compiled: up to this many rows, a multiply-sum reduction instead of MKL's product
REDUCE_MAX_WEIGHT = 1 << 20  # ... for weights up to this many elements (4 MiB in float32)


def linear_few_rows(layer: nn.Linear, x: Tensor) -> Tensor:
    """layer(x) for x (B, in): weight @ x^T when B <= FEW_ROWS on CPU (a reduction when compiling), else layer(x)."""
    if x.is_cuda or x.dim() != 2 or x.shape[0] > FEW_ROWS or x.dtype != layer.weight.dtype:
        return layer(x)
    if x.shape[0] <= REDUCE_ROWS and layer.weight.numel() <= REDUCE_MAX_WEIGHT and torch.compiler.is_compiling():
        # One multiply-sum per row over the same (out, in) range: Inductor fuses them into one loop that reads each row
        # of W once for all B rows, each contiguous in `in` whatever the layout of x's producer.
        x = x.contiguous()
        x = x.as_strided(x.shape, x.stride())  # as_strided makes Inductor store x rather than recompute it per output
        out = torch.stack([(layer.weight * row).sum(dim=-1) for row in x.unbind(0)])  # (B, out)
        return out if layer.bias is None else out + layer.bias
    if layer.bias is None:
        return torch.mm(layer.weight, x.t()).t()  # (B, out)
    return torch.addmm(layer.bias[:, None], layer.weight, x.t()).t()
