"""What users see: the `caviar` CLI, live progress, status and the HTML report."""
