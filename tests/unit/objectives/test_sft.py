import math

import pytest
import torch

from purld.objectives.sft import sft_loss


def test_mean_nll_over_active_tokens():
    """−(log ½ + log ¼ + log 1) / 3 = (0.693147 + 1.386294) / 3 = 0.693147; the masked 7.0 is ignored."""
    token_logps = torch.tensor([[math.log(0.5), math.log(0.25)], [0.0, 7.0]])
    mask = torch.tensor([[True, True], [True, False]])
    assert sft_loss(token_logps, mask).loss.item() == pytest.approx(math.log(2), abs=1e-6)
