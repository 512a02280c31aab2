"""What operators run: the CLI, the dashboard, `entity-sync workers`, operator input."""
