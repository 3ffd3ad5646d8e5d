"""The `fractaldb` console script: one click group, the pipeline's stages as its subcommands.

The console is the one module above every stage: `STAGES` names each stage's subcommands by
"module:attribute", floor by floor (search -> render -> shards -> pre-train -> fine-tune ->
report), and they are imported only when invoked, so `fractaldb --help` and the renderer
commands never import torch. The stage packages import only the floors below their own
(fractaldb < shards < pretrain < finetune; tests/pipeline/test_layers.py).
"""

from __future__ import annotations

import importlib

import click

from fractaldb.core.errors import OUTPUT_ERRNOS, output_error

# stage (a package, lowest first) -> its subcommands, name -> "module:attribute"; the modules
# must not import torch at import time. `fractaldb --help` lists them in this order.
STAGES: dict[str, dict[str, str]] = {
    "fractaldb (categories, renderer)": {
        "search": "fractaldb.commands:search",
        "preview": "fractaldb.commands:preview",
    },
    "shards (datasets on disk)": {
        "render": "shards.cli:render",
        "shards": "shards.cli:shards",
    },
    "pretrain (pre-training)": {
        "pretrain": "pretrain.cli:pretrain",
    },
    "finetune (transfer, inspection)": {
        "finetune": "finetune.cli:finetune",
        "probe": "finetune.cli:probe",
        "report": "finetune.cli:report",
        "inspect": "finetune.inspect_cli:inspect",
    },
}
LAZY_SUBCOMMANDS: dict[str, str] = {
    name: target for commands in STAGES.values() for name, target in commands.items()
}


class SubcommandImportError(click.ClickException):
    """A subcommand whose module fails to import (e.g. a broken torch install): exit code 1."""

    exit_code = 1

    def __init__(self, name: str, module: str, error: ImportError) -> None:
        first = (str(error).splitlines() or [""])[0]
        super().__init__(
            f"`fractaldb {name}` cannot start: importing {module} raised "
            f"{type(error).__name__}: {first}; fix: repair the installation "
            "(e.g. `uv sync` or `pip install --force-reinstall fractaldb`)"
        )


class LazyGroup(click.Group):
    """A click group that imports each subcommand's module only when it is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """List the subcommands in pipeline order (STAGES), then any others, sorted."""
        staged = list(LAZY_SUBCOMMANDS)
        others = set(super().list_commands(ctx)) | set(LAZY_SUBCOMMANDS)
        return staged + sorted(others - set(staged))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Return the subcommand, importing its module on first use; an import error inside
        it is reported as such, not as "No such command"."""
        if cmd_name in LAZY_SUBCOMMANDS:
            module_name, attr = LAZY_SUBCOMMANDS[cmd_name].split(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as error:
                raise SubcommandImportError(cmd_name, module_name, error) from error
            return getattr(module, attr)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List subcommands in --help, one section per stage; one that cannot be imported is
        listed with its error."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        staged = {name: stage for stage, commands in STAGES.items() for name in commands}
        sections: dict[str, list[tuple[str, str]]] = {}
        for name in names:
            try:
                cmd = self.get_command(ctx, name)
            except SubcommandImportError as error:
                row = (name, f"(unavailable: {error.message})")
            else:
                if cmd is None or cmd.hidden:
                    continue
                row = (name, cmd.get_short_help_str(limit))
            sections.setdefault(staged.get(name, "Other commands"), []).append(row)
        for title, rows in sections.items():
            with formatter.section(title):
                formatter.write_dl(rows)


def _close_progress_bars() -> None:
    """Close progress bars a failure left open, so the error starts a line of its own."""
    import sys

    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is not None:
        for bar in list(getattr(tqdm_module.tqdm, "_instances", ())):
            bar.close()


class OneLineErrorGroup(LazyGroup):
    """Print every usage or user error as one line (exit code 2), never a traceback."""

    def main(self, *args, **kwargs):  # type: ignore[override]
        """Run the CLI, turning click errors into one-line messages."""
        import sys

        from fractaldb.core.stopping import (
            TERMINATED_EXIT_CODE,
            Terminated,
            terminate_like_interrupt,
        )

        kwargs["standalone_mode"] = False
        try:
            with terminate_like_interrupt():  # `kill PID` cleans up as Ctrl-C does
                rc = super().main(*args, **kwargs)
        except click.exceptions.Abort as exc:
            if isinstance(exc.__cause__, Terminated):
                click.echo("Terminated.", err=True)
                sys.exit(TERMINATED_EXIT_CODE)
            click.echo("Aborted.", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            _close_progress_bars()
            msg = " ".join(exc.format_message().split())
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                msg += f" (see `{exc.ctx.command_path} --help`)"
            click.echo(f"Error: {msg}", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:  # a full or read-only disk no command anticipated
            if exc.errno not in OUTPUT_ERRNOS:
                raise
            _close_progress_bars()
            where = exc.filename if exc.filename is not None else "the output folder"
            click.echo(f"Error: {output_error(exc, where).format_message()}", err=True)
            sys.exit(2)
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
      fractaldb render --preset fractaldb-1k --categories categories.json --out data/fdb1k
      fractaldb pretrain supervised --data data/fdb1k --model deit_tiny_patch16_224 --out runs/deit
      fractaldb finetune --dataset cifar10 --data-root data/ --init runs/deit --out runs/c10
    """
