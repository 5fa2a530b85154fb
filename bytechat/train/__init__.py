"""Training: the trainer, its step math, batches, DDP, logging, the lr schedule."""
