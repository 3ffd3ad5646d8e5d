"""The `fractaldb` console script: one click group, subcommands registered lazily.

Subcommands living in other packages (`shards`, `pretrain`, `finetune`) are imported only
when invoked, so `fractaldb --help` and the renderer commands never import torch.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute"; the module must not import torch at import time.
LAZY_SUBCOMMANDS: dict[str, str] = {
    "search": "fractaldb.commands:search",
    "preview": "fractaldb.commands:preview",
    "render": "shards.cli:render",
    "shards": "shards.cli:shards",
    "pretrain": "pretrain.cli:pretrain",
    "finetune": "finetune.cli:finetune",
    "report": "finetune.cli:report",
    "inspect": "finetune.inspect_cli:inspect",
}


class LazyGroup(click.Group):
    """A click group that imports each subcommand's module only when it is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """List eager and lazy subcommands, sorted."""
        return sorted(set(super().list_commands(ctx)) | set(LAZY_SUBCOMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Return the subcommand, importing its module on first use."""
        if cmd_name in LAZY_SUBCOMMANDS:
            module_name, attr = LAZY_SUBCOMMANDS[cmd_name].split(":")
            try:
                module = importlib.import_module(module_name)
                return getattr(module, attr)
            except (ImportError, AttributeError):
                return None
        return super().get_command(ctx, cmd_name)


class OneLineErrorGroup(LazyGroup):
    """Print every usage or user error as one line (exit code 2), never a traceback."""

    def main(self, *args, **kwargs):  # type: ignore[override]
        """Run the CLI, turning click errors into one-line messages."""
        import sys

        kwargs["standalone_mode"] = False
        try:
            rc = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            msg = " ".join(exc.format_message().split())
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                msg += f" (see `{exc.ctx.command_path} --help`)"
            click.echo(f"Error: {msg}", err=True)
            sys.exit(exc.exit_code)
        sys.exit(rc if isinstance(rc, int) else 0)


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fractaldb")
def main() -> None:
    """Formula-driven pre-training of vision transformers on fractal images.

    \b
    Quick start (seconds on a laptop): 16 categories, 1,024 images, a preview picture:
      fractaldb render
    Typical pipeline:
      fractaldb search --num-categories 1000 --out categories.json
      fractaldb preview --categories categories.json --out preview.png
      fractaldb render --preset fractaldb-1k --categories categories.json --out shards/
      fractaldb pretrain supervised --data shards/ --model deit_tiny_patch16_224 --out runs/deit
      fractaldb finetune --dataset cifar10 --data-root data/ --init runs/deit --out runs/c10
    """
