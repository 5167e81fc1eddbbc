"""Write data/sample.parquet: a few dozen tweets and reviews written for this project.

Run: python data/make_sample.py   (deterministic; the Parquet file is committed)
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TWEETS = [
    "finally friday and the sun is out, best feeling ever",
    "missed the last train home again. sitting alone on the platform",
    "my sister just got engaged!!! crying happy tears",
    "why does my phone battery die exactly when I need it. so done with this",
    "the thunder tonight is so loud I can't sleep, kind of scared honestly",
    "wait, they cancelled the show?? did not see that coming at all",
    "coffee with my best friend, we laughed for two hours straight",
    "another rejection email. starting to think I'm not good enough",
    "I love how my dog waits by the door every evening",
    "stuck in traffic for 90 minutes, absolutely furious",
    "walking home in the dark and someone is following me, nervous",
    "just found 50 euros in an old jacket, what a surprise",
    "grandma's soup on a cold day is pure comfort",
    "the city feels so empty since you left",
    "nailed the presentation, team was thrilled",
    "customer service hung up on me twice. unbelievable",
    "first night in the new apartment and every noise makes me jump",
    "they remembered my birthday at work, I'm amazed",
    "watching the sunset with you is my favourite thing",
    "lost my keys, my wallet and now my patience",
    "exams next week and I'm terrified I'll blank",
    "my old teacher recognised me after ten years, shocked and touched",
    "rainy sunday, blanket, book. perfect",
    "nobody came to my party. quiet evening then",
]
REVIEWS = [
    ("B01", "The blender arrived broken and the seller ignored three emails. I am angry and want my money back."),
    ("B01", "Works as advertised. Smoothies are silky and it is quieter than my old one. Happy with it."),
    ("B02", "I bought these headphones for my husband and he adores them. The sound is warm and the fit is soft."),
    ("B02", "After two weeks the left ear stopped working. Disappointed, it was a gift and now I feel awful."),
    ("B03", "Honestly surprised by how good this cheap tent is. It survived a storm on the coast without a leak."),
    ("B03", "The zipper jammed at night in the mountains and we could not get out. A frightening experience."),
    ("B01", "Delivery was fast, packaging neat, product great. Would buy again without thinking twice."),
    ("B04", "This novel made me cry on the bus. The ending is heartbreaking, I still think about the characters."),
    ("B04", "A charming, tender love story. I adored every page and gave copies to my friends."),
    ("B02", "The battery lasts twice as long as promised. Did not expect that from this brand at all!"),
    ("B03", "Poles snapped on the first day. Rude support. Never again."),
    ("B04", "A slow start, but the second half is gripping and a little scary. Kept the lights on."),
    ("B05", "The smart lock sometimes opens by itself. I do not feel safe in my own home anymore."),
    ("B05", "Setup took five minutes and the app is lovely. My kids think it is magic."),
    ("B05", ""),
    ("B01", "   "),
]


def build() -> pa.Table:
    start = datetime(2026, 11, 1, 8, 0, tzinfo=timezone.utc)
    rows = []
    for i, text in enumerate(TWEETS):
        rows.append(dict(id=f"t{i:03d}", text=text, created_at=start + timedelta(hours=7 * i), source="twitter", product_id=None))
    for i, (product, text) in enumerate(REVIEWS):
        rows.append(dict(id=f"r{i:03d}", text=text, created_at=start + timedelta(hours=11 * i + 3), source="review", product_id=product))
    rows.append(dict(id="r999", text=None, created_at=start + timedelta(days=9), source="review", product_id="B05"))
    schema = pa.schema(
        [("id", pa.string()), ("text", pa.string()), ("created_at", pa.timestamp("us", tz="UTC")),
         ("source", pa.string()), ("product_id", pa.string())]
    )
    return pa.Table.from_pylist(rows, schema=schema)


if __name__ == "__main__":
    out = Path(__file__).with_name("sample.parquet")
    pq.write_table(build(), out, row_group_size=16, compression="zstd")
    print(f"wrote {out} ({build().num_rows} rows)")
