"""Training: train state, optimizers, data-parallel steps, the loop, checkpoints, populations."""
