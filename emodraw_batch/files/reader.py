"""Find, validate and stream the input Parquet files.

Everything here runs before the model loads, so a wrong path, column or type
fails in a second with a message that names the file, the column and the fix.
Reading is streamed by row groups and record batches: memory is bounded by the
window of rows, never by the size of the corpus.
"""

from __future__ import annotations

import glob as globlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from emodraw_batch.errors import InputError
from emodraw_batch.files.storage import filesystem, is_uri

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    """One readable Parquet file, the row counts of its row groups, and its version stamp."""

    path: str
    schema: pa.Schema
    row_groups: tuple[int, ...]
    # Size and modification time, or the object store's ETag: a file changed in place differs (resume.py).
    stamp: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def num_rows(self) -> int:
        return sum(self.row_groups)


@dataclass(frozen=True)
class Shard:
    """Row groups [start, stop) of one file: the unit of work and of output (one file each)."""

    file_index: int
    path: str
    start: int
    stop: int
    rows: int
    # The corpus-wide schema every window is aligned to, so all output files agree.
    schema: pa.Schema | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return f"part-{self.file_index:05d}-{self.start:05d}.parquet"


@dataclass
class Inputs:
    """The resolved corpus: readable files in a fixed order, and files skipped as unreadable."""

    files: list[InputFile]
    schema: pa.Schema
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return sum(f.num_rows for f in self.files)


def _expand_one(spec: str) -> list[str]:
    """A file, a folder (all *.parquet below it, hidden files skipped) or a glob -> sorted paths."""
    fs, path = filesystem(spec)
    if any(c in spec for c in _GLOB_CHARS):
        if is_uri(spec):
            import fsspec

            fsspec_fs, inner = fsspec.core.url_to_fs(spec)
            protocol = spec.split("://", 1)[0]
            return sorted(f"{protocol}://{p}" for p in fsspec_fs.glob(inner))
        return sorted(p for p in globlib.glob(path, recursive=True) if Path(p).is_file())
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [spec if is_uri(spec) else path]
    if info.type == pafs.FileType.Directory:
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        names = [
            f.path
            for f in found
            if f.type == pafs.FileType.File
            and f.path.endswith(".parquet")
            and not any(part.startswith((".", "_")) for part in Path(f.path).relative_to(path).parts)
        ]
        prefix = spec.split("://", 1)[0] + "://" if is_uri(spec) else ""
        return sorted(prefix + n for n in names)
    raise InputError(
        f"Input {spec!r} does not exist. Pass a Parquet file, a folder of Parquet files, or a quoted glob "
        "such as 'tweets/*.parquet'."
    )


def expand(specs: Sequence[str]) -> list[str]:
    """All input files, de-duplicated, in a deterministic order (the order of the specs, then sorted)."""
    if not specs:
        raise InputError("No input given. Pass one or more Parquet files, folders or globs.")
    paths: list[str] = []
    for spec in specs:
        found = _expand_one(spec)
        if not found:
            raise InputError(f"Input {spec!r} matched no Parquet files. Check the path or glob pattern.")
        paths.extend(p for p in found if p not in paths)
    return paths


def open_parquet(path: str) -> pq.ParquetFile:
    fs, inner = filesystem(path)
    # pre_buffer=False: with pyarrow's default (True), iter_batches keeps every column chunk it has
    # read until the file is closed, so a shard's memory grew with its rows (measured on a
    # 2-million-row input: 42 MiB in pyarrow's pool after 2 windows, 196 MiB after 40).
    return pq.ParquetFile(fs.open_input_file(inner), pre_buffer=False)


def _stamp(fs: pafs.FileSystem, inner: str, handle: pa.NativeFile) -> dict[str, Any]:
    """What tells this version of a file from a rewrite: its size, plus the ETag that object stores
    give (S3 returns it when the object is opened, at no extra request), else the modification time."""
    stamp: dict[str, Any] = {"size": handle.size()}
    tags = {} if isinstance(fs, pafs.LocalFileSystem) else (handle.metadata() or {})
    etag = tags.get(b"ETag") or tags.get("ETag")
    if etag:
        stamp["etag"] = (etag.decode() if isinstance(etag, bytes) else str(etag)).strip('"')
        return stamp
    mtime = fs.get_file_info(inner).mtime
    if mtime is not None:
        stamp["mtime"] = mtime.isoformat()
    return stamp


# How an error message names the setting that fixes it: the command line's flag, or the Python API's keyword.
FLAGS = {
    "text_column": "--text-column NAME", "id_column": "--id-column NAME", "cast_text": "--cast-text",
    "language_column": "--language-column NAME", "no_language_column": "--language-column none",
}
KEYWORDS = {
    "text_column": "text_column=NAME", "id_column": "id_column=NAME", "cast_text": "cast_text=True",
    "language_column": "language_column=NAME", "no_language_column": 'language_column="none"',
}


def check_columns(
    where: str,
    schema: pa.Schema,
    text_column: str,
    id_column: str | None,
    cast_text: bool,
    fix: dict[str, str] = FLAGS,
) -> None:
    """The text column (and the id column, if given) exists, and the text column is a string type.

    `where` names what was checked ("File 'a.parquet'", "The data"); `fix` spells the settings in the caller's terms.
    """
    if text_column not in schema.names:
        raise InputError(
            f"{where} has no text column {text_column!r}; its columns are {schema.names}. "
            f"Pass the right one with {fix['text_column']}."
        )
    if id_column is not None and id_column not in schema.names:
        raise InputError(
            f"{where} has no id column {id_column!r}; its columns are {schema.names}. "
            f"Pass the right one with {fix['id_column']}, or leave it out."
        )
    kind = schema.field(text_column).type
    is_text = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    if not is_text and not cast_text:
        where = where[0].lower() + where[1:]
        raise InputError(
            f"Column {text_column!r} in {where} has type {kind}, but the text column must be a string type. "
            f"Pass {fix['cast_text']} to cast it to string, or choose another column with {fix['text_column']}."
        )


def check_language_column(where: str, schema: pa.Schema, column: str | None, fix: dict[str, str] = FLAGS) -> None:
    """The input's language column, where present, holds strings (language codes such as en or pt-BR)."""
    if column is None or column not in schema.names:
        return
    kind = schema.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise InputError(
            f"Column {column!r} in {where[0].lower() + where[1:]} has type {kind}, but the language column must hold "
            f"language codes as strings (BCP 47, such as en or pt-BR). Name another column with {fix['language_column']}, "
            f"or pass {fix['no_language_column']} to detect every row's language."
        )


def check_language_column_found(wheres: Sequence[str], names: Sequence[Sequence[str]], column: str | None,
                                fix: dict[str, str] = FLAGS) -> None:
    """A language column other than the default `lang` must be in at least one input: else it is a typo.

    (`lang` is X's name and only the default: inputs without it are detected, and that is not an error.)
    """
    if column is None or column == "lang" or any(column in n for n in names):
        return
    shown = ", ".join(repr(w) for w in wheres[:3]) + (f" and {len(wheres) - 3} more" if len(wheres) > 3 else "")
    raise InputError(
        f"The language column {column!r} is in none of the inputs ({shown}); the columns of the first are "
        f"{list(names[0])}. Name the right one with {fix['language_column']}, or pass {fix['no_language_column']} "
        "to detect every row's language."
    )


def unify(files: Sequence[InputFile]) -> pa.Schema:
    """One schema for the whole corpus: missing columns become nullable, int32/int64 and
    string/large_string widen. Types that cannot be merged are an error naming file and column."""
    try:
        return pa.unify_schemas([f.schema for f in files], promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    first: dict[str, tuple[str, pa.DataType]] = {}
    for f in files:
        for column in f.schema:
            seen = first.setdefault(column.name, (f.path, column.type))
            try:
                pa.unify_schemas([pa.schema([(column.name, seen[1])]), pa.schema([column])], promote_options="permissive")
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                raise InputError(
                    f"Column {column.name!r} is {column.type} in file {f.path!r} but {seen[1]} in file {seen[0]!r}; "
                    "the output files must share one schema. Cast the column to one type in the inputs, "
                    "or label these files in separate runs."
                ) from None
    raise InputError(
        f"The schemas of the input files {[f.path for f in files]} cannot be merged into one output schema. "
        "Label them in separate runs, or cast their columns to the same types."
    )


def align(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Columns in the corpus schema's order and types; columns a file lacks are all null."""
    if table.schema.remove_metadata().equals(schema):
        return table
    columns = [
        table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def scan(
    specs: Sequence[str],
    text_column: str,
    *,
    id_column: str | None = None,
    cast_text: bool = False,
    skip_bad_files: bool = False,
) -> Inputs:
    """Resolve and validate every input file (footers only: cheap, no data read)."""
    files: list[InputFile] = []
    skipped: list[dict[str, str]] = []
    for path in expand(specs):
        try:
            fs, inner = filesystem(path)
            handle = fs.open_input_file(inner)
            meta = pq.ParquetFile(handle).metadata
            stamp = _stamp(fs, inner, handle)
            schema = meta.schema.to_arrow_schema()
            row_groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
        except (pa.ArrowException, OSError) as exc:
            if skip_bad_files:
                skipped.append({"path": path, "reason": str(exc).splitlines()[0]})
                continue
            raise InputError(
                f"File {path!r} is not a readable Parquet file ({str(exc).splitlines()[0]}). "
                "Remove or repair it, or pass --skip-bad-files to skip unreadable files and list them in the manifest."
            ) from None
        schema = schema.remove_metadata()
        check_columns(f"File {path!r}", schema, text_column, id_column, cast_text)
        files.append(InputFile(path, schema, row_groups, stamp))
    if not files:
        raise InputError(f"None of the inputs {list(specs)} could be read; see the skipped files: {skipped}.")
    return Inputs(files, unify(files), skipped)


def plan_shards(inputs: Inputs, shard_rows: int) -> list[Shard]:
    """Cut each file into runs of whole row groups of about `shard_rows` rows (deterministic)."""
    shards: list[Shard] = []
    for index, f in enumerate(inputs.files):
        if not f.row_groups:
            # A zero-row file still gets a (zero-row) output with the full schema.
            shards.append(Shard(index, f.path, 0, 0, 0, inputs.schema))
            continue
        start, rows = 0, 0
        for i, n in enumerate(f.row_groups):
            rows += n
            if rows >= shard_rows or i == len(f.row_groups) - 1:
                shards.append(Shard(index, f.path, start, i + 1, rows, inputs.schema))
                start, rows = i + 1, 0
    return shards


def read_windows(shard: Shard, window_rows: int) -> Iterator[pa.Table]:
    """Stream a shard as tables of at most `window_rows` rows, in file order, in the corpus schema."""
    pf = open_parquet(shard.path)
    schema = shard.schema or pf.schema_arrow
    yielded = False
    try:
        for batch in pf.iter_batches(batch_size=window_rows, row_groups=range(shard.start, shard.stop)):
            if batch.num_rows:
                yielded = True
                yield align(pa.Table.from_batches([batch]), schema)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"Reading row groups {shard.start}-{shard.stop - 1} of {shard.path!r} failed ({exc}). "
            "The file is damaged; repair or remove it, or pass --skip-bad-files."
        ) from None
    if not yielded:  # row groups of zero rows: still one empty table, so the output has the schema
        yield schema.empty_table()
