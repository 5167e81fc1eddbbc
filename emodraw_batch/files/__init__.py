"""Files: where data lives and how it is read and written (local paths and object storage).

    storage.py      a path or URI -> pyarrow filesystem; polars' storage options
    layout.py       every name in an output folder and where it lives
    reader.py       find, check and stream input Parquet; cut shards
    writer.py       the output contract and the streaming Parquet writer
    lock.py         one writer per output folder (an OS lock; lease.py on object stores)
    labelled.py     labelled data for training and evaluation (Parquet, CSV, `text;label`)

Imports the base modules and inference (the writer's columns come from the classifier).
"""
