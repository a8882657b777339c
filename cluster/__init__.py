"""Ray: connecting to or starting a cluster, resources per trial, and the trial workers.

Nothing here knows about Optuna; workers only train the configs they are handed.
"""
