"""The `orbita` command line: thin Typer commands over the services."""
