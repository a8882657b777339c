"""Ray: starting or joining a cluster (one place), resources per trial, and the actors that train
trials behind the executor boundary (`caviar.models.executor`).

Nothing here knows about Optuna or MLflow; workers only train the configs they are handed.
"""
