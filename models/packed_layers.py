"""Packed networks run layer by layer as batched tensor operations, no `vmap`: the shapes of
the built-in families (and of any plugin network made of the same layers).

Activations take one of two layouts. Members first, (members, batch, features): a Linear is a
batched matrix product, a BatchNorm1d runs once over members x features. Channels, (batch,
members x channels, length): a Conv1d is one grouped convolution (a group per member), and
BatchNorm1d, activations and pooling work per channel as they are. `Unflatten` (a signal of
one channel) enters the channels layout, `Flatten` leaves it. Every member's numbers stay its
own: no operation mixes members.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

PER_CHANNEL = (nn.ReLU, nn.Tanh, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.Identity, nn.MaxPool1d,
               nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)  # fmt: skip


def runs_by_layer(network: nn.Module) -> bool:
    """Whether `network` is a chain these layouts run. It starts with a Linear, or with an
    `Unflatten` to one channel (the channels layout, until a `Flatten`); a Linear runs in
    the features layout, a Conv1d (zero padding) and `Flatten` in the channels layout, and
    affine BatchNorm1d with running statistics, activations, pooling and dropout that drops
    nothing in either. Anything else (a Linear over a signal's length, say) runs under
    `vmap`."""
    if not isinstance(network, nn.Sequential) or len(network) == 0:
        return False
    if not isinstance(network[0], (nn.Linear, nn.Unflatten)):
        return False
    channels = False  # the layout the activations are in at each layer
    for index, module in enumerate(network):
        if isinstance(module, nn.Unflatten):
            if index or not _one_channel(module):
                return False
            channels = True
        elif isinstance(module, nn.Flatten):
            if not channels or (module.start_dim, module.end_dim) != (1, -1):
                return False
            channels = False
        elif not (_supported(module) and _in_its_layout(module, channels)):
            return False
    return True


def forward_by_layer(shape: nn.Sequential, params: dict[str, torch.Tensor],
                     buffers: dict[str, torch.Tensor], x: torch.Tensor,
                     training: bool) -> torch.Tensor:  # fmt: skip
    """Logits (members, batch, classes) of `x`: (members, batch, features), or (batch,
    features) that every member sees."""
    members = next(iter(params.values())).shape[0]
    h = x if x.dim() == 3 else x.unsqueeze(0).expand(members, -1, -1)
    channels = False  # the layout h is in
    for name, module in shape.named_children():
        if isinstance(module, nn.Unflatten):  # (members, batch, L) -> (batch, members x 1, L)
            h, channels = h.transpose(0, 1), True
        elif isinstance(module, nn.Flatten):  # (batch, members x C, 1) -> (members, batch, C)
            h, channels = h.reshape(h.shape[0], members, -1).transpose(0, 1), False
        elif isinstance(module, nn.Linear):
            h = torch.bmm(h, params[f"{name}.weight"].transpose(1, 2))  # matmul adds reshapes
            if f"{name}.bias" in params:
                h = h + params[f"{name}.bias"].unsqueeze(1)
        elif isinstance(module, nn.Conv1d):
            weight = params[f"{name}.weight"]  # (members, out, in / groups, kernel)
            h = F.conv1d(h, weight.flatten(0, 1), None, module.stride, module.padding,
                         module.dilation, members * module.groups)  # fmt: skip
        elif isinstance(module, nn.BatchNorm1d):
            h = _batch_norm(name, module, params, buffers, h, training, channels)
        elif not isinstance(module, nn.Dropout):  # dropout here drops nothing
            h = module(h)
    return h


def _batch_norm(name: str, module: nn.BatchNorm1d, params: dict[str, torch.Tensor],
                buffers: dict[str, torch.Tensor], h: torch.Tensor, training: bool,
                channels: bool) -> torch.Tensor:  # fmt: skip
    """One BatchNorm over every member's features (or channels), each with its own
    statistics, scale and shift."""
    members_first = not channels
    flat = h.transpose(0, 1).flatten(1) if members_first else h
    mean, var = buffers[f"{name}.running_mean"], buffers[f"{name}.running_var"]
    out = F.batch_norm(flat, mean.view(-1), var.view(-1), params[f"{name}.weight"].flatten(),
                       params[f"{name}.bias"].flatten(), training, module.momentum or 0.0,
                       module.eps)  # fmt: skip
    if training:
        buffers[f"{name}.num_batches_tracked"].add_(1)
    if members_first:  # copied back to members first: the activation and the next layer's
        # batched product (forward and backward) then read contiguous memory. 16 members of
        # width 32, one thread: an epoch 3-12% faster (five interleaved pairs of 12 epochs).
        return out.view(h.shape[1], h.shape[0], -1).transpose(0, 1).contiguous()
    return out


def _one_channel(module: nn.Unflatten) -> bool:
    return module.dim == 1 and len(module.unflattened_size) == 2 and module.unflattened_size[0] == 1


def _in_its_layout(module: nn.Module, channels: bool) -> bool:
    """A Linear runs on features (over a signal's length it is no batched product of
    members' features), a Conv1d on channels; the rest run in either layout."""
    if isinstance(module, nn.Linear):
        return not channels
    return channels if isinstance(module, nn.Conv1d) else True


def _supported(module: nn.Module) -> bool:
    if isinstance(module, nn.BatchNorm1d):
        return module.momentum is not None and module.affine and module.track_running_stats
    if isinstance(module, nn.Conv1d):
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    if isinstance(module, nn.Dropout):
        return module.p == 0
    return isinstance(module, (nn.Linear, nn.Flatten, *PER_CHANNEL))
