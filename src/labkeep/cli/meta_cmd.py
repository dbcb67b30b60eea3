"""``labkeep meta ...``: what the data is. One command group that several modules fill.

``meta_app`` is the group; modules that add ``meta`` subcommands import it and register
their commands on it in their own ``register`` (DataCite fields, extracted file metadata,
key-values), so each stays small and no module owns another's commands.
"""

from __future__ import annotations

import typer

meta_app = typer.Typer(
    name="meta",
    help="Describe data: DataCite fields, key-values, and metadata read from files.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def register(app: typer.Typer) -> None:
    app.add_typer(meta_app, name="meta")
