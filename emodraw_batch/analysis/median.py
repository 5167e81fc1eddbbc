"""Exact medians of float32 columns in bounded memory: two streaming passes that count bit patterns.

polars' `median()` keeps every value of every group until the end, so its memory grows with the
rows. Here no value is kept. A monotone map turns each float32 into a uint32 whose order is the
values' order (negatives: every bit flipped; the rest: the sign bit set). Pass 1 counts the rows
of each (key, high 16 bits); that finds, per key, the bucket(s) holding the middle rank(s).
Pass 2 counts the low 16 bits of the rows in those buckets. Both passes are polars' streaming
engine, and their results have at most 65,536 rows per key and bucket, however many rows there
are: memory depends on the number of keys (groups x emotions), not on the corpus.

The value is the one polars' `median()` gives on the column cast to Float64: the middle value,
or for an even count `lower + (upper - lower) * 0.5` (its linear interpolation, to the bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import polars as pl

_SIGN = 0x8000_0000
_ALL = 0xFFFF_FFFF
# Two passes (shift, width): the high 16 bits, then the low 16 inside the buckets holding the middle
# ranks. Each pass counts at most 2**16 digits per key and bucket, whatever the corpus size. (Three
# passes of 11, 11 and 10 bits would hold less per pass, but every streaming scan of a large file
# leaves polars holding a few MiB more: measured, two passes peak lower.)
_PASSES = ((16, 16), (0, 16))
# Keys with at most this many rows keep their values for polars' median (128 KiB each at most): for
# a small key, counting would hold about as many rows as it has values, and many small groups
# (300,000 (product, emotion) pairs in 4 million rows) would cost more than the values themselves.
SMALL = 16_384


def _ordered_bits(value: pl.Expr) -> pl.Expr:
    """The float32 bits as a uint32 that sorts like the value (-inf < ... < -0.0 < 0.0 < ... < inf)."""
    import polars as pl

    bits = value.cast(pl.Float32).reinterpret(dtype=pl.UInt32)
    flip = pl.when(bits >= _SIGN).then(pl.lit(_ALL, pl.UInt32)).otherwise(pl.lit(_SIGN, pl.UInt32))
    return bits.xor(flip)


def _values(ordered: np.ndarray) -> np.ndarray:
    """`_ordered_bits` undone: uint32 keys back to float32 values, as float64 (exact)."""
    ordered = ordered.astype(np.uint32)
    bits = np.where(ordered >= _SIGN, ordered ^ np.uint32(_SIGN), ordered ^ np.uint32(_ALL)).astype(np.uint32)
    return bits.view(np.float32).astype(np.float64)


def _digit_counts(rows: pl.LazyFrame, keys: list[str], wanted: pl.DataFrame | None, shift: int, width: int) -> pl.DataFrame:
    """Rows per (keys, `_prefix`, `_digit`): the bits above `shift + width`, then the `width` bits below them.

    Only rows whose prefix is a wanted one (`wanted`: keys, `_prefix`) count; all rows on the first pass.
    """
    import polars as pl

    rows = rows.select(*keys, (pl.col("_bits") // 2 ** (shift + width)).alias("_prefix"), "_bits")
    if wanted is not None:
        # Any key's wanted prefix: a plain filter streams where a join on the keys held memory; the
        # counts of other keys' prefixes are few, and `_narrow` drops them.
        rows = rows.filter(pl.col("_prefix").is_in(wanted["_prefix"].unique().to_list()))
    digit = ((pl.col("_bits") // 2**shift) % 2**width).alias("_digit")
    return rows.group_by(*keys, "_prefix", digit).agg(pl.len().cast(pl.Int64).alias("_n")).collect(engine="streaming")


def _middle_ranks(counts: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """The middle rank(s) of each key, 0-based: the same one twice for an odd count, two for an even one."""
    import polars as pl

    totals = counts.group_by(keys).agg(pl.col("_n").sum().alias("_total"))
    start = [pl.lit(0, pl.Int64).alias("_prefix"), pl.lit(0, pl.Int64).alias("_before")]
    return pl.concat(
        [totals.select(*keys, ((pl.col("_total") - 1) // 2).alias("_rank"), *start),
         totals.select(*keys, (pl.col("_total") // 2).alias("_rank"), *start)]
    )


def _narrow(counts: pl.DataFrame, keys: list[str], wanted: pl.DataFrame, width: int) -> pl.DataFrame:
    """Each wanted (keys, `_rank`): the digit whose rows hold that rank -> a prefix `width` bits longer.

    `wanted` has keys, `_rank`, `_prefix` and `_before` (rows of the key below that prefix).
    """
    import polars as pl

    group = [*keys, "_prefix"]
    ranges = (
        counts.join(wanted.select(*group, "_before").unique(group), on=group, nulls_equal=True)
        .sort([*group, "_digit"], nulls_last=True)
        .with_columns((pl.col("_before") + pl.col("_n").cum_sum().over(group) - pl.col("_n")).alias("_start"))
    )
    return (
        wanted.select(*group, "_rank")
        .join(ranges, on=group, nulls_equal=True)
        .filter((pl.col("_start") <= pl.col("_rank")) & (pl.col("_rank") < pl.col("_start") + pl.col("_n")))
        .select(*keys, "_rank", (pl.col("_prefix") * 2**width + pl.col("_digit")).alias("_prefix"), pl.col("_start").alias("_before"))
    )


def _result(wanted: pl.DataFrame, keys: list[str], name: str) -> pl.DataFrame:
    """After the last pass each prefix is every bit: the middle value(s), averaged as polars does."""
    import polars as pl

    found = wanted.with_columns(pl.Series("_value", _values(wanted["_prefix"].to_numpy()), pl.Float64))
    low, high = pl.col("_value").min(), pl.col("_value").max()
    return found.group_by(keys).agg((low + (high - low) * 0.5).alias(name))


def _counted(rows: pl.LazyFrame, keys: list[str], name: str) -> pl.DataFrame:
    """The two counting passes for every key of `rows` (rows with `_bits`)."""
    wanted = None
    for shift, width in _PASSES:
        counts = _digit_counts(rows, keys, wanted, shift, width)
        wanted = _narrow(counts, keys, _middle_ranks(counts, keys) if wanted is None else wanted, width)
    return _result(wanted, keys, name)


def median(
    frame: pl.LazyFrame, keys: Sequence[str], sizes: pl.DataFrame, value: str = "emotion_score", name: str = "median_score"
) -> pl.DataFrame:
    """The exact median of the float32 column `value` per `keys` (one row per key with a non-null value).

    `sizes` has the keys and their `count` of rows. A key of up to SMALL rows keeps its values
    (polars' own median, streaming): counting would hold as many rows as it has values. Larger keys
    are counted in two passes. Memory: at most SMALL values per small key, 2 x 65,536 counts per
    large key, never the rows. Nulls are left out, as polars' median does.
    """
    import polars as pl

    keys = list(keys)
    rows = frame.filter(pl.col(value).is_not_null())
    small = sizes.filter(pl.col("count") <= SMALL).select(keys)
    large = sizes.filter(pl.col("count") > SMALL).select(keys)
    found = []
    for part, counted in ((small, False), (large, True)):
        if part.is_empty():
            continue
        mine = rows if part.height == sizes.height else rows.join(part.lazy(), on=keys, how="semi", nulls_equal=True)
        if counted:
            found.append(_counted(mine.with_columns(_ordered_bits(pl.col(value)).cast(pl.Int64).alias("_bits")), keys, name))
        else:
            exact = pl.col(value).cast(pl.Float64).median().alias(name)
            found.append(mine.group_by(keys).agg(exact).collect(engine="streaming"))
    return pl.concat(found) if found else sizes.select(keys).with_columns(pl.lit(None, pl.Float64).alias(name))
