"""Run `fractaldb finetune`: resolve the configuration, open the downstream data, train with the
engine (pretrain.engine.train, the project's one training loop)."""

from __future__ import annotations

from typing import Any

import click


def run_finetune(opts: dict[str, Any]) -> None:
    """Fine-tune as described by the command's options (see finetune.cli)."""
    from fractaldb.errors import check_writable, writing_to
    from pretrain import distributed as D
    from pretrain.augment import on_device
    from pretrain.config import dump_config
    from pretrain.data import DatasetData
    from pretrain.engine import train
    from pretrain.runfolder import remove_if_failed_early
    from shards.badsamples import LeaveOutUndecodable

    from .config import finetune_config
    from .datasets import DATASETS, build_datasets, check_data_root, fingerprint, train_probe
    from .task import FinetuneTask

    if opts["dataset"] not in DATASETS:  # before anything slow
        build_datasets(opts["dataset"], opts["data_root"])
    check_data_root(opts["dataset"], opts["data_root"])  # before "no --model" and the like
    cfg, recipe = finetune_config(FinetuneTask, opts)
    if opts.get("print_config"):
        click.echo(dump_config(cfg), nl=False)
        return
    check_writable(opts["out"], "run folder")
    try:
        info = D.init_distributed(cfg["device"])
        task = FinetuneTask(recipe=recipe)

        def build(download: bool):
            return build_datasets(
                cfg["dataset"],
                opts["data_root"],
                train_transform=task.train_transform(cfg),
                eval_transform=task.eval_transform(cfg),
                download=download,
                test_root=opts.get("test_root"),
                val_split=cfg["val_split"],
                val_per_class=cfg["val_per_class"],
            )

        download = bool(opts.get("download"))
        if download and info.world_size > 1:
            # one rank downloads; the others read what it wrote
            if info.is_main:
                build(True)
            D.barrier()
            download = False
        ds = build(download)
        data = DatasetData(
            ds.train,
            ds.test,
            ds.num_classes,
            fingerprint(ds),
            workers=cfg["workers"],
            samples_per_epoch=cfg["samples_per_epoch"],
            # the device path's workers only decode: nothing random to reseed per epoch
            persistent_workers=on_device(cfg),
            max_bad_samples=cfg["max_bad_samples"],
        )
        task.data, task.dataset_sha256 = ds, data.manifest_sha256
        # unreadable photos are left out and counted there too, as in validation
        task.train_probe = LeaveOutUndecodable(
            train_probe(ds.train, task.eval_transform(cfg), cfg["train_eval_samples"]),
            data.bad_samples,
        )
        with writing_to(opts["out"], "run folder"), remove_if_failed_early(opts["out"]):
            train(cfg, task, data, opts["out"], resume=opts.get("resume"))
        if info.is_main:
            click.echo(f"results: {opts['out']}/results.json")
    finally:
        D.cleanup()
