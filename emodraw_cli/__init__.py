"""The `emodraw-batch` command line: the top layer, above `emodraw_flows` (Prefect) and the `emodraw_batch` core.

`app` parses the commands and calls one function of the layer below for each; `display`
draws progress bars, tables and summaries. Only typer, rich and pydantic load at start-up.
"""
