"""`misdirection models`: what a model spec loads to."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models_command(
        model: str = typer.Argument("smollm2-135m", help="Embedded alias, local folder or Hub id."),
        adapter: list[str] = typer.Option(
            [], "--adapter", help="PEFT adapter folder(s) to attach."
        ),
    ) -> None:
        """Load a model (and adapters) and print its layer layout and load time."""
        import time

        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        from misdirection.models import EMBEDDED_MODELS, LAYER_CONVENTION, load_model

        start = time.perf_counter()
        lm = load_model(model, adapter=adapter or None)
        seconds = time.perf_counter() - start
        table = Table(title=f"{model}" + (f" + {lm.adapter_spec}" if lm.adapter_spec else ""))
        table.add_column("property")
        table.add_column("value")
        table.add_row("architecture", type(lm.view.base).__name__)
        table.add_row("layers", str(lm.view.n_layers))
        table.add_row("hidden size", str(lm.view.d_model))
        table.add_row("decoder blocks", f"{lm.view.block_name(0)} .. {lm.view.block_name(-1)}")
        table.add_row("MLP down-projection", lm.view.down_proj_name(0).replace(".0.", ".{i}."))
        # Text, not a markup string: Rich would take "[i + 1]" for a style tag and drop it.
        table.add_row("layer convention", Text(LAYER_CONVENTION))
        table.add_row("device / dtype", f"{lm.device} / {next(lm.model.parameters()).dtype}")
        table.add_row("load time", f"{seconds:.2f} s")
        table.add_row("embedded aliases", ", ".join(EMBEDDED_MODELS))
        Console().print(table)
