"""Knowledge distillation: the loss, optimizers, halting policies, the soft-label source, the trainer."""
