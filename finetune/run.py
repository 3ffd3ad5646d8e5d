"""Run `fractaldb finetune`: resolve the configuration, open the downstream data, train with the
engine (pretrain.engine.train, the project's one training loop)."""

from __future__ import annotations

from typing import Any

import click


def run_finetune(opts: dict[str, Any]) -> None:
    """Fine-tune as described by the command's options (see finetune.cli)."""
    from fractaldb.core.errors import check_writable, writing_to
    from pretrain.engine import distributed as D
    from pretrain.engine.config import dump_config, on_device
    from pretrain.engine.data import DatasetData
    from pretrain.engine.loop import train
    from pretrain.engine.runfolder import remove_if_failed_early
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
                train_per_class=cfg["train_per_class"],
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
            train(cfg, task, data, opts["out"], resume=opts.get("resume"),
                  verbose=bool(opts.get("verbose")))  # fmt: skip
        if info.is_main:
            click.echo(f"results: {opts['out']}/results.json")
    finally:
        D.cleanup()


def run_probe(opts: dict[str, Any]) -> dict[str, Any]:
    """k-NN and linear-probe top-1 of --init's frozen features (see finetune.probe); write
    OUT/probe.json and return its contents."""
    import json
    import time
    from pathlib import Path

    import torch
    from torch.utils.data import DataLoader

    from fractaldb.core.atomic import write_text_atomically
    from fractaldb.core.errors import check_writable, writing_to
    from pretrain.engine import distributed as D
    from pretrain.engine.config import dump_config

    from .config import finetune_config
    from .datasets import DATASETS, build_datasets, fingerprint
    from .probe import extract_features, probe_results
    from .task import FinetuneTask

    if opts["dataset"] not in DATASETS:  # before anything slow
        build_datasets(opts["dataset"], opts["data_root"])
    cfg, recipe = finetune_config(FinetuneTask, {**opts, "linear_probe": True})
    if opts.get("print_config"):
        click.echo(dump_config(cfg), nl=False)
        return {}
    out = Path(opts["out"])
    check_writable(out, "probe folder")
    start = time.time()
    torch.manual_seed(int(cfg["seed"]))
    task = FinetuneTask(recipe=recipe)
    eval_tf = task.eval_transform(cfg)
    ds = build_datasets(
        cfg["dataset"],
        opts["data_root"],
        train_transform=eval_tf,
        eval_transform=eval_tf,
        download=bool(opts.get("download")),
        test_root=opts.get("test_root"),
        val_split=cfg["val_split"],
        val_per_class=cfg["val_per_class"],
        train_per_class=cfg["train_per_class"],
    )
    device = D.init_distributed(cfg["device"]).device
    try:
        task.setup(cfg, ds.num_classes)
        model = task.build_model().to(device)
        from fractaldb.core.workers import loader_worker_init
        from shards.badsamples import BadSamples, LeaveOutUndecodable, collate_readable

        unreadable = BadSamples()  # left out, never replaced (as fine-tuning's validation)

        def batches(dataset: Any) -> Any:
            loader = DataLoader(
                LeaveOutUndecodable(dataset, unreadable),
                batch_size=int(cfg["batch_size"]),
                num_workers=int(cfg["workers"]),
                collate_fn=collate_readable,
                worker_init_fn=loader_worker_init(),  # workers end with this process
            )
            for batch in loader:
                if batch is not None:  # None: not one photo of the batch was readable
                    yield batch[0], batch[1]

        train = extract_features(model, batches(ds.train), device)
        val = extract_features(model, batches(ds.test), device)
        if not len(train[1]) or not len(val[1]):
            from fractaldb.core.errors import FractalDBError

            raise FractalDBError(
                f"no readable {'training' if not len(train[1]) else 'validation'} photos in "
                f"{opts['data_root']}; fix: point --data-root at a folder of readable images"
            )
        results = probe_results(train, val, ds.num_classes)
    finally:
        D.cleanup()
    results.update({
        "init": cfg["init"],
        "init_summary": task.init_summary,
        "model": cfg["model"],
        "model_args": cfg["model_args"],
        "img_size": int(cfg["img_size"]),
        "dataset": cfg["dataset"],
        "dataset_sha256": fingerprint(ds),
        "unreadable": unreadable.total,
        "unreadable_first": unreadable.first(),
        "seconds": round(time.time() - start, 1),
    })  # fmt: skip
    with writing_to(out, "probe folder"):
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomically(out / "probe.json", json.dumps(results, indent=2) + "\n")
    click.echo(
        f"k-NN top-1 {results['knn_top1']:.2f}  linear-probe top-1 {results['linear_top1']:.2f}"
        f"  ({results['train_samples']} train / {results['test_samples']} test"
        + (f", {unreadable.total} unreadable left out" if unreadable.total else "")
        + f"): {out / 'probe.json'}"
    )
    return results
