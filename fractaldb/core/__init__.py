"""The project's foundation, below every stage: one-line errors (errors), crash-safe writes
(atomic), KEY=VALUE options (options), seed derivation (seeding), the machine description
(machine), worker processes that end with their parent (workers) and stopping on Ctrl-C or
SIGTERM (stopping). Pure Python and numpy: no stage (renderer, shards, pre-training,
fine-tuning) here.
"""
