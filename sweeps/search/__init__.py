"""Spec -> plan -> trials: the validated spec, search-space scales, stages and their boxes, the
Optuna studies, and the driver loop that asks, reports, prunes and tells."""
