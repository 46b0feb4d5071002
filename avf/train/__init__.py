"""Training: data feeding, the loop (one process or torchrun/DDP), self-describing checkpoints."""
