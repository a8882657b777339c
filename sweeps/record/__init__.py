"""Results: the MLflow record of every sweep and trial (written through one journal) and the
champion (checkpointed, published, found again, retrained)."""
