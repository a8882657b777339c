"""The worker side of caviar: data sets, the network and one trial's training loop.

Nothing here knows about Optuna, MLflow or Ray; a trial is `(config, data) -> epoch metrics`.
"""
