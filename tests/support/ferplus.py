"""FER+'s vote file as the tests write it: its header's columns in its own order (../shared/data/ferplus), with
FER+'s names for three of FER-2013's classes and its three columns for no class."""

FERPLUS_COLUMNS = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
