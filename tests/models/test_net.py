import math

import torch
from torch import nn
from torch.nn import functional as F

from caviar.models.config import MlpConfig
from caviar.models.families import build_network
from caviar.models.net import predict_proba


def _linears(network: nn.Module) -> list[nn.Linear]:
    return [m for m in network if isinstance(m, nn.Linear)]


def test_layout_linear_without_bias_then_batchnorm_then_activation():
    network = build_network(10, 4, MlpConfig(hidden_units=16, layers=3))
    kinds = [type(m).__name__ for m in network]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 3 + ["Linear"]
    hidden, head = _linears(network)[:-1], _linears(network)[-1]
    assert all(layer.bias is None for layer in hidden)
    assert head.bias is not None and head.out_features == 4


def test_without_batchnorm_linear_layers_keep_their_bias():
    network = build_network(10, 4, MlpConfig(hidden_units=16, layers=2, batch_norm=False))
    assert not any(isinstance(m, nn.BatchNorm1d) for m in network)
    assert all(layer.bias is not None for layer in _linears(network))


def test_softmax_head_matches_the_worked_example():
    # Logits [5, 2, -1, 3] -> e^z / sum e^z = [0.842, 0.042, 0.002, 0.114] (course notes).
    network = build_network(3, 4, MlpConfig(hidden_units=8, layers=1))
    head = _linears(network)[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([5.0, 2.0, -1.0, 3.0]))
    probs = predict_proba(network, torch.randn(2, 3))
    expected = torch.tensor([0.842, 0.042, 0.002, 0.114])
    assert torch.allclose(probs[0], expected, atol=5e-4)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2))
    # The training loss is the cross-entropy of that softmax: -log p(true class).
    loss = F.cross_entropy(network(torch.randn(1, 3)), torch.tensor([0]))
    assert math.isclose(loss.item(), -math.log(0.8420), rel_tol=1e-3)


def test_batchnorm_uses_batch_statistics_in_training_and_running_ones_in_eval():
    torch.manual_seed(0)
    network = build_network(5, 3, MlpConfig(hidden_units=6, layers=1))
    bn = network[1]
    x = torch.randn(64, 5) * 3 + 2
    network.train()
    pre = network[0](x)
    out = bn(pre)
    assert torch.allclose(out.mean(dim=0), bn.bias, atol=1e-5)  # normalised batch, shifted by beta
    before = bn.running_mean.clone()
    network.eval()
    with torch.no_grad():
        eval_out = bn(pre)
    assert torch.equal(bn.running_mean, before), "eval mode must not update running statistics"
    manual = (pre - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    assert torch.allclose(eval_out, manual, atol=1e-5)
    assert not torch.allclose(eval_out, out, atol=1e-3)
