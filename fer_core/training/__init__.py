"""Making models: architectures, the recipe, the training service, callbacks and checkpoints,
distillation, fine-tuning, ensembles, and publishing (score, time, convert, save).
"""
