"""The `torch.optim` classes a trial's settings map to, as references for caviar's optimisers."""

import torch

TORCH_CLASSES = {  # on the multi-tensor path ("foreach"), as the trial optimiser
    "sgd": lambda p, c: torch.optim.SGD(
        p, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, foreach=True
    ),
    "rmsprop": lambda p, c: torch.optim.RMSprop(
        p,
        lr=c.lr,
        alpha=c.beta2,
        eps=c.eps,
        momentum=c.momentum,
        weight_decay=c.weight_decay,
        foreach=True,
    ),
    "adam": lambda p, c: torch.optim.Adam(
        p,
        lr=c.lr,
        betas=(c.beta1, c.beta2),
        eps=c.eps,
        weight_decay=c.weight_decay,
        foreach=True,
    ),
}
