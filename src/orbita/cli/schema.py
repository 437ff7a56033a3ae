"""`orbita schema`: the strategy file's JSON Schema, for editors (completion, help, errors)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from orbita.cli.common import err_console, user_errors
from orbita.model.schema import strategy_json_schema_text


def schema(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write the schema to this file instead of printing it.", dir_okay=False
        ),
    ] = None,
) -> None:
    """Print the JSON Schema of strategy files (editors validate and complete them with it).

    A YAML editor with the YAML language server picks it up from the file's first line:
    `# yaml-language-server: $schema=<path or URL of the schema>`.
    """
    text = strategy_json_schema_text()
    if out is None:
        sys.stdout.write(text)
        return
    with user_errors():
        out.write_text(text, encoding="utf-8")
    err_console().print(f"wrote {out}", markup=False, highlight=False)
