"""Command-line interface: typer commands, one module per command group, no logic of their own."""
