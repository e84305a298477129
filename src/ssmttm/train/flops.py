"""Training compute as C = 6 N D (Kaplan et al. 2020), the accounting the paper's FLOPs comparison implies.

Choices (the paper does not publish its accounting; PAPER.md section 5):
- N = trainable parameters that take part in a matrix multiply per token: every trainable parameter of the LM
  except the input embedding tables, which are looked up (a gather, no multiply-add). The output heads, the text
  projection, Mamba2, attention and MLP weights all count. The frozen text encoder is not trained and is not
  counted (its forward pass is cached or cheap next to the LM). For the released prefix_simba (281.04 M trainable)
  N = 279.99 M; the embeddings are under 1 % of the model, so the choice barely moves the numbers.
- D = audio token positions trained on: sequences x `lm.seq_len` (right padding included, since the model computes
  on it). Text-prefix positions are not counted, so prefix and cross models with the same N and D get the same C.
- 6 = 2 (multiply-add) x 3 (forward + backward). Attention's quadratic term and the SSM scan's state updates are
  not in 6ND; at these sizes they are a few percent, and leaving them out keeps the comparison backbone-neutral.

With this, 100k steps of 128 clips x 2588 positions for prefix_simba give 6 x 280.0e6 x 33.1e9 = 5.6e19 FLOPs,
about 11 % of MusicGen-small's 6 x 300e6 x (1e6 x 192 x 1500) = 5.2e20.

N is counted on the model each run builds from its own resolved `lm` section (`lm.per_backbone`), and D from its own
`train_lm.max_steps`. The paper profile (configs/paper.yaml) gives N = 279.99 M prefix_simba (24 blocks), 282.71 M
prefix_mamba (19), 301.76 M cross_simba (19), 303.98 M cross_transformer (24; 400k steps: 2.4e20 FLOPs) and
278.83 M prefix_transformer (33).
"""

from __future__ import annotations

from torch import nn

H100_BF16_DENSE_FLOPS = 989e12  # peak dense bf16 tensor-core FLOP/s of an H100 SXM (no sparsity)


def flops_params(model: nn.Module) -> int:
    """N: trainable parameters excluding input embedding tables (nn.Embedding weights)."""
    embedding_params = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in embedding_params)


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def training_flops(n_params: int, tokens: int | float) -> float:
    """C = 6 N D."""
    return 6.0 * float(n_params) * float(tokens)


def tokens_per_step(clips_per_step: int, seq_len: int) -> int:
    """D per optimizer step: clips in the global batch x token positions per clip."""
    return clips_per_step * seq_len


def mfu(n_params: int, tokens_per_second: float, peak_flops: float = H100_BF16_DENSE_FLOPS) -> float:
    """Model FLOPs utilisation: achieved 6 N D per second over the hardware peak."""
    return training_flops(n_params, tokens_per_second) / peak_flops
