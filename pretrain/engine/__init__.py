"""The shared training layer, below pre-training (pretrain/) and fine-tuning (finetune/).

One training loop (loop.train) drives a Task (task.Task) over a DataSource: distributed
setup, batch and learning-rate arithmetic, AMP, EMA, checkpoints, metrics and --resume.
Around it: recipes and configuration (config), the command-line options every training
command shares (options), models (models, hf_models), in-memory data sources (data), the
batched device augmentation (augment) and the PIL path's guard (augment_pil).

Nothing here imports pretrain's tasks or finetune; config and options import no torch (the
console's --help stays fast).
"""
