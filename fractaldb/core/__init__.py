"""The project's foundation, below every stage: one-line errors (errors), crash-safe writes
(atomic), KEY=VALUE options (options), seed derivation (seeding) and the machine description
(machine). Pure Python and numpy: no stage (renderer, shards, pre-training, fine-tuning) here.
"""
