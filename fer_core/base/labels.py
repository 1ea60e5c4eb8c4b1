"""The seven FER2013 emotion classes: codes, display names, colours and folder-name synonyms."""

from __future__ import annotations

#: Class names in FER2013 code order (0 angry ... 6 neutral).
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(EMOTIONS)

#: Human-readable names for charts and labels.
DISPLAY_NAMES: dict[str, str] = {
    "angry": "Angry",
    "disgust": "Disgust",
    "fear": "Fear",
    "happy": "Happy",
    "sad": "Sad",
    "surprise": "Surprise",
    "neutral": "Neutral",
}

#: One RGB colour per class, used for boxes and charts alike.
COLORS_RGB: dict[str, tuple[int, int, int]] = {
    "angry": (220, 50, 47),
    "disgust": (133, 153, 0),
    "fear": (108, 113, 196),
    "happy": (255, 193, 7),
    "sad": (38, 139, 210),
    "surprise": (211, 54, 130),
    "neutral": (147, 161, 161),
}

# Folder names people use for the classes, lower-cased; each maps to its FER2013 code.
_SYNONYMS: dict[str, int] = {}
for _code, _words in enumerate(
    (
        ("angry", "anger", "annoyed", "0"),
        ("disgust", "disgusted", "disgusting", "contempt", "1"),
        ("fear", "fearful", "scared", "afraid", "fearfull", "2"),
        ("happy", "happiness", "joy", "joyful", "smile", "smiling", "3"),
        ("sad", "sadness", "unhappy", "sorrow", "4"),
        ("surprise", "surprised", "surprising", "shock", "shocked", "5"),
        ("neutral", "neutrality", "calm", "6"),
    )
):
    for _word in _words:
        _SYNONYMS[_word] = _code


def label_from_name(name: str) -> int | None:
    """Return the FER2013 code for a class folder name (case-insensitive, synonyms allowed)."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key in _SYNONYMS:
        return _SYNONYMS[key]
    # "0_angry", "3-happy" and similar names: a class word after a number prefix.
    prefix, _, word = key.partition("_")
    if prefix.isdigit() and word in _SYNONYMS:
        return _SYNONYMS[word]
    return None


def color_bgr(label: str) -> tuple[int, int, int]:
    """The class colour in OpenCV's BGR order."""
    r, g, b = COLORS_RGB[label]
    return (b, g, r)
