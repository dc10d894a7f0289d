"""Training: losses, the training loop, distributed helpers and checkpoints."""
