"""Knowledge distillation: the loss, optimizers, halting policies, the trainer and its checkpoints."""
