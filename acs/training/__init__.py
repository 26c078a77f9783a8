"""Training: the config schema and checks, the objective, the loop, checkpoints and the run folder."""
