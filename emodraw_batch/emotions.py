"""The six emotions: their canonical order (a model's id2label) and their colour in every chart."""

from __future__ import annotations

EMOTIONS = ("sadness", "joy", "love", "anger", "fear", "surprise")

# One colour per emotion, the same in every chart (Tableau-like hues that read well on white).
COLORS = {
    "sadness": "#4E79A7",
    "joy": "#EDC948",
    "love": "#E377C2",
    "anger": "#E15759",
    "fear": "#8C6BB1",
    "surprise": "#F28E2B",
}
