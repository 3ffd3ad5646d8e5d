"""WebDataset shards of formula-driven images: writing, checking and reading.

Writing (no torch): `shards.writer.write_shards`, the `fractaldb render` and
`fractaldb shards verify|inspect|finalize` commands (`shards.cli`), presets in
`shards/presets.json`. Reading (torch): `shards.loader.make_train_loader`,
`make_eval_loader`, `read_dataset_info`; rendering without disk: `shards.onthefly`.
"""
