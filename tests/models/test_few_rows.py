"""linear_few_rows: layer(x) for the handful of rows of a decode step, eagerly and inside torch.compile."""

import pytest
import torch
from torch import nn

from ssmttm.models.few_rows import FEW_ROWS, REDUCE_MAX_WEIGHT, REDUCE_ROWS, linear_few_rows


def layer(bias: bool, n_in: int = 48, n_out: int = 40) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(n_in, n_out, bias=bias)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 9])
def test_eager_equals_the_layer(bias, rows):
    lin, x = layer(bias), torch.randn(rows, 48)
    with torch.no_grad():
        torch.testing.assert_close(linear_few_rows(lin, x), lin(x), rtol=1e-6, atol=1e-6)


def graph_ops(fn, *args) -> list[str]:
    """The operations Dynamo records for fn(*args) (the graph Inductor would compile), run without compiling."""
    ops: list[str] = []

    def record(gm, example_inputs):
        ops.extend(
            getattr(node.target, "__name__", str(node.target))
            for node in gm.graph.nodes
            if node.op in ("call_function", "call_method")
        )
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=record, fullgraph=True, dynamic=False)(*args)
    return ops


@pytest.mark.parametrize("rows", [1, REDUCE_ROWS, REDUCE_ROWS + 1, FEW_ROWS])
def test_compiled_graph_reduces_few_rows_and_multiplies_more(rows):
    ops = graph_ops(linear_few_rows, layer(True), torch.randn(rows, 48))
    matmuls = [op for op in ops if op in ("mm", "addmm", "linear", "matmul")]
    if rows <= REDUCE_ROWS:  # a multiply-sum per row, the input stored once (as_strided), no BLAS call
        assert not matmuls and "sum" in ops and "as_strided" in ops
    else:
        assert matmuls


def test_compiled_graph_leaves_large_weights_to_blas():
    big = nn.Linear(1024, REDUCE_MAX_WEIGHT // 1024 + 1, bias=False)  # one row of W more than the limit
    ops = graph_ops(linear_few_rows, big, torch.randn(2, 1024))
    assert "mm" in ops and "sum" not in ops


@pytest.mark.parametrize("bias", [False, True])
def test_inductor_reduction_equals_the_layer_for_a_transposed_computed_input(bias):
    # The decode step feeds the product with a value computed in the same graph whose layout Inductor chooses (here a
    # transpose of a scaled input): the reduction must read it correctly, whatever its strides.
    lin = layer(bias)

    def step(columns: torch.Tensor) -> torch.Tensor:  # columns (in, B)
        x = torch.nn.functional.silu(columns.t() * 2.0)  # (B, in), strides (1, B)
        return linear_few_rows(lin, x)

    columns = torch.randn(48, 2)
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    with torch.no_grad():
        expected = lin(torch.nn.functional.silu(columns.t() * 2.0))
        torch.testing.assert_close(compiled(columns), expected, rtol=1e-5, atol=1e-6)
