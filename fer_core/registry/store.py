"""The model store: Keras ``.keras`` files, each beside a JSON model card, listed and loaded by name.

The store is the ``models/`` folder of the project unless ``$FER_LAB_MODELS`` names another;
the name ``default`` is the model the app opens with. Keras (and with it TensorFlow, some 500 MB
of memory) is imported only when a Keras model is really needed: a model with a LiteRT file
classifies faces without it.

The models that ship with FER Lab are listed in the folder's ``_shipped.json`` (``SHIPPED_MANIFEST``;
no model can be named so): each shipped name with the SHA-256 of its ``.keras`` file. A stored model
is shipped while its name is listed there and its card records that hash (one trained again under
its name is not); shipped models cannot be deleted (:meth:`ModelStore.delete`). A folder without
the file ships none.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from fer_core.base.errors import ModelNotFoundError, SettingError
from fer_core.base.files import write_atomically
from fer_core.registry.cards import CardError, ModelCard

#: The shipped models: the copy an installed wheel carries inside the package, else the checkout's ``models/``.
_PACKAGE = Path(__file__).resolve().parent.parent  # fer_core/
_PACKAGED_MODELS = _PACKAGE / "shipped_models"
PROJECT_MODELS = _PACKAGED_MODELS if _PACKAGED_MODELS.is_dir() else _PACKAGE.parent / "models"
DEFAULT_NAME = "default"
#: The list of shipped models in a store folder (a leading '_' is not a model name: never a card).
SHIPPED_MANIFEST = "_shipped.json"
#: How a model's weights can be stored: as trained, in half the space, or in a quarter (ensembles).
WEIGHT_DTYPES = ("float32", "float16", "int8")
if TYPE_CHECKING:
    import keras

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def models_dir() -> Path:
    """The store folder: ``$FER_LAB_MODELS`` or the shipped models (``PROJECT_MODELS``)."""
    return Path(os.environ.get("FER_LAB_MODELS", PROJECT_MODELS))


def check_name(name: str) -> str:
    """A model name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."""
    if not _NAME.match(name) or name.endswith(".keras") or name.endswith(".json"):
        raise SettingError(f"invalid model name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return name


class StoredModel:
    """A stored model with its card and, when it has one, its LiteRT flatbuffer (``lite``).

    The Keras model is read on first use of :attr:`model` (Grad-CAM, training, the TensorFlow
    backend), so serving faces from the LiteRT file never imports TensorFlow.
    """

    def __init__(self, name: str, path: Path, card: ModelCard, lite: bytes | None = None,
                 model: keras.Model | None = None):
        self.name, self.path, self.card, self.lite = name, path, card, lite
        self._model = model
        self._lock = threading.Lock()

    @property
    def model(self) -> keras.Model:
        """The Keras model, loaded once (thread-safe)."""
        with self._lock:
            if self._model is None:
                self._model = _load_keras(self.path)
            return self._model


def _load_keras(path: Path) -> keras.Model:
    import keras  # only when a Keras file loads: serving a LiteRT file needs none

    import fer_core.registry.layers  # noqa: F401  (registers Int8Conv2D, the layer of compact models)

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for damaged files
        raise ModelNotFoundError(f"{path}: not a loadable Keras model ({error})") from error


class ModelStore:
    """Saves, lists and loads models with their cards in one folder."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else models_dir()

    def names(self) -> list[str]:
        """Stored model names, ``default`` first."""
        if not self.root.is_dir():
            return []
        names = sorted(p.stem for p in self.root.glob("*.keras") if p.with_suffix(".json").exists())
        return sorted(names, key=lambda n: n != DEFAULT_NAME)

    def resolve(self, name_or_path: str | os.PathLike) -> Path:
        """The ``.keras`` file of a stored name or of a path to a model file."""
        text = str(name_or_path)
        candidate = Path(text)
        if text.endswith(".keras") and candidate.is_file():
            return candidate
        stored = self.root / f"{text}.keras"
        if _NAME.match(text) and stored.is_file():
            return stored
        known = ", ".join(self.names()) or "none"
        raise ModelNotFoundError(f"no model {text!r} in {self.root} (stored models: {known})")

    def card(self, name_or_path: str | os.PathLike) -> ModelCard:
        """The card of a model (a minimal one for a bare ``.keras`` file without a card), named as
        it is stored, whatever a copied card file says."""
        path = self.resolve(name_or_path)
        card_path = path.with_suffix(".json")
        if not card_path.exists():
            return ModelCard(name=path.stem)
        try:
            return ModelCard.from_json(card_path.read_text(), path.stem)
        except (OSError, CardError) as error:
            raise ModelNotFoundError(f"{card_path}: {error}") from error

    def card_or_error(self, name: str) -> ModelCard:
        """The card of a model, or for an unreadable one its name and the error
        (:meth:`ModelCard.unreadable`): listings show it and go on."""
        try:
            return self.card(name)
        except ModelNotFoundError as error:
            return ModelCard.unreadable(name, str(error))

    def cards(self) -> list[ModelCard]:
        """The cards of every stored model (see :meth:`card_or_error`)."""
        return [self.card_or_error(name) for name in self.names()]

    def load(self, name_or_path: str | os.PathLike = DEFAULT_NAME) -> StoredModel:
        """A model and its card by name or path.

        With an up-to-date ``.tflite`` beside it, the Keras file is only checked to be a Keras
        archive and is read when first needed; without one, it is loaded now.
        """
        path = self.resolve(name_or_path)
        card = self.card(path)
        lite_path = path.with_suffix(".tflite")
        lite = lite_path.read_bytes() if lite_path.exists() else None
        if lite is None or not _lite_is_current(path, lite_path, lite, card):
            return StoredModel(path.stem, path, card, model=_load_keras(path))
        if not zipfile.is_zipfile(path):
            raise ModelNotFoundError(f"{path}: not a loadable Keras model (not a .keras archive)")
        return StoredModel(path.stem, path, card, lite)

    def save(self, name: str, model: keras.Model, card: ModelCard, lite: bytes | None = None) -> Path:
        """Write ``name.keras`` and ``name.json`` (replacing a model of that name).

        ``lite``, the model as a TensorFlow Lite flatbuffer (``predict.to_tflite``), is written
        beside it as ``name.tflite`` for fast inference.
        """
        check_name(name)
        # Written in a side folder and moved in place, card last: a reader never pairs new weights
        # with an old card, nor sees a half-written file.
        staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=self.ensure_root()))
        try:
            staged = staging / f"{name}.keras"
            model.save(staged)
            _deflate(staged)
            hashes = {"keras": _sha256(staged.read_bytes())}
            if lite is not None:
                (staging / f"{name}.tflite").write_bytes(lite)
                hashes["tflite"] = _sha256(lite)
            card = replace(card, name=name, file_bytes=staged.stat().st_size, sha256=hashes)
            (staging / f"{name}.json").write_text(card.to_json())
            path = self.root / f"{name}.keras"
            os.replace(staged, path)
            if lite is not None:
                os.replace(staging / f"{name}.tflite", path.with_suffix(".tflite"))
            else:
                path.with_suffix(".tflite").unlink(missing_ok=True)
            os.replace(staging / f"{name}.json", path.with_suffix(".json"))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return path

    def update_card(self, name: str, card: ModelCard) -> None:
        """Write a stored model's card again (its weights unchanged), e.g. with a prior correction added."""
        path = self.resolve(name)
        card = replace(card, name=path.stem)
        write_atomically(path.with_suffix(".json"), lambda staged: staged.write_text(card.to_json()))

    def shipped(self) -> set[str]:
        """The stored models that came with FER Lab and are unchanged since (see the module's docstring).

        A model listed in the manifest whose card cannot be read counts as shipped: nothing says it changed.
        """
        manifest = self.root / SHIPPED_MANIFEST
        try:
            listed = json.loads(manifest.read_text()) if manifest.is_file() else {}
        except (OSError, ValueError) as error:
            raise SettingError(f"{manifest}: not a readable list of shipped models ({error})") from error
        if not isinstance(listed, dict):
            raise SettingError(f"{manifest}: must map each shipped model's name to its .keras file's SHA-256")
        return {name for name in self.names() if name in listed and self._recorded_hash(name) in (listed[name], None)}

    def _recorded_hash(self, name: str) -> str | None:
        """The SHA-256 of the ``.keras`` file that ``name``'s card records ("" when none), None for an
        unreadable card."""
        card = self.card_or_error(name)
        return None if card.error is not None else card.sha256.get("keras", "")

    def delete(self, name: str) -> None:
        """Delete the stored model ``name``: its card first, so no listing shows it half deleted, then its
        Keras and LiteRT files. A shipped model (:meth:`shipped`) is a :class:`SettingError`."""
        path = self.resolve(check_name(name))
        if name in self.shipped():
            raise SettingError(f"'{name}' ships with FER Lab and cannot be deleted")
        for suffix in (".json", ".keras", ".tflite"):
            path.with_suffix(suffix).unlink(missing_ok=True)

    def ensure_root(self) -> Path:
        """The store folder, made if missing; a path that cannot be a folder is a :class:`SettingError`
        (checked before a long training run, not after it)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SettingError(f"{self.root}: cannot be the model store folder ({error.strerror or error})") from error
        return self.root


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _lite_is_current(keras_path: Path, lite_path: Path, lite: bytes, card: ModelCard) -> bool:
    """Whether a ``.tflite`` file is the one saved with this ``.keras`` file: the card's hashes of
    both match (whatever the files' dates after a copy; a card without a ``.tflite`` hash was saved
    without one); for a card from before the hashes, it is not older."""
    hashes = card.sha256
    if hashes:
        return hashes.get("tflite") == _sha256(lite) and hashes.get("keras") == _sha256(keras_path.read_bytes())
    return lite_path.stat().st_mtime >= keras_path.stat().st_mtime


def _deflate(path: Path) -> None:
    """Rewrite a ``.keras`` archive compressed: Keras stores its weights uncompressed, and
    deflating them makes the file about a tenth smaller; Keras reads either."""

    def pack(packed: Path) -> None:
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as target:
            for entry in source.infolist():
                target.writestr(entry.filename, source.read(entry.filename))

    write_atomically(path, pack)
