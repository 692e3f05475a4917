"""A job's life: the runner, its store (records, checkpoints, locks), progress and provenance."""
