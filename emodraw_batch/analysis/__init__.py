"""Analysis: what the labels say.

    stats.py        statistics with polars (DIR/stats/)
    report.py       charts and the HTML page
    metrics.py      accuracy, macro F1, confusion
    evaluate.py     a checkpoint against labelled data

Imports the base modules, inference and files.
"""
