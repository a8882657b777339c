"""The driver side of caviar: from a spec to a ranked set of trials and a champion.

`search/` turns a spec into stages and drives Optuna; `record/` keeps the MLflow record and the
champion; `ops/` re-tests and re-tunes champions on a schedule; `views/` is what users see (the
CLI, progress, status, the report). `launch` puts one sweep together from these parts.
"""
