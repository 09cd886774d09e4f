"""RowAdam: Adam per row of a code table, so a rarely drawn code moves as if it were drawn every step."""
from __future__ import annotations

import pytest
import torch

from otavatar.training.row_adam import RowAdam

BETAS = (0.0, 0.99)     # the prior's


def test_equals_torch_adam_when_every_row_is_touched():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5, 3))
    b = torch.nn.Parameter(a.detach().clone())
    reference, rows = torch.optim.Adam([a], lr=0.01, betas=(0.9, 0.99)), RowAdam([b], lr=0.01, betas=(0.9, 0.99))
    for _ in range(20):
        g = torch.randn(5, 3)
        a.grad, b.grad = g.clone(), g.clone()
        reference.step()
        rows.step()
    torch.testing.assert_close(a, b)


def test_a_late_row_moves_lr_and_untouched_rows_stay():
    torch.manual_seed(0)
    dense, table = torch.nn.Parameter(torch.zeros(4, 3)), torch.nn.Parameter(torch.zeros(4, 3))
    reference, rows = torch.optim.Adam([dense], lr=0.01, betas=BETAS), RowAdam([table], lr=0.01, betas=BETAS)
    for step in range(101):
        g = torch.zeros(4, 3)
        g[0] = torch.randn(3)
        if step == 100:
            g[3] = torch.randn(3)                 # row 3 is drawn for the first time at step 100
        dense.grad, table.grad = g.clone(), g.clone()
        reference.step()
        rows.step()
    torch.testing.assert_close(table[3].abs(), torch.full((3,), 0.01))    # Adam's first step: lr per element
    assert float(dense[3].detach().abs().min()) > 0.07  # torch's Adam: ~8 lr
    assert float(table[1:3].detach().abs().max()) == 0.0  # never drawn: never moved


def test_state_round_trips_and_bad_parameters_are_refused():
    table = torch.nn.Parameter(torch.zeros(4, 3))
    opt = RowAdam([table], lr=0.01, betas=BETAS)
    table.grad = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 2.0]])
    opt.step()
    again = RowAdam([table], lr=0.01, betas=BETAS)
    again.load_state_dict(opt.state_dict())
    assert again.state[table]["steps"].tolist() == [1, 0, 0, 1]
    with pytest.raises(ValueError, match="2-d"):
        RowAdam([torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="lr"):
        RowAdam([table], lr=0.0)
