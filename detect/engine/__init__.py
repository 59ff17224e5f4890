"""The training loop, evaluation, checkpoints and the run directory's files."""
