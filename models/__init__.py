"""The worker side of caviar: data sets, the network, optimisers and one trial's training loop,
plus the executor boundary (`executor`: jobs, events, the protocol) that the driver talks to.

Nothing here knows about Optuna, MLflow or Ray; a trial is `(config, data) -> epoch metrics`.
"""
