"""What users hand the server: uploaded files spooled to disk for the loaders, and dataset paths
checked to lie in the folders the server allows."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from fer_core.base.errors import DataError


def server_data_roots() -> list[Path]:
    """Folders whose datasets the app may open by path: ``$FER_LAB_DATA_DIR`` (os.pathsep-separated).

    Unset, no server path is allowed: a hosted app must not open any file a visitor names.
    """
    text = os.environ.get("FER_LAB_DATA_DIR", "")
    return [Path(part).expanduser().resolve() for part in text.split(os.pathsep) if part.strip()]


def resolve_server_path(text: str) -> Path:
    """A dataset path typed by an app user, checked to lie inside one of :func:`server_data_roots`."""
    roots = server_data_roots()
    if not roots:
        raise DataError("opening datasets by path is off; set FER_LAB_DATA_DIR on the server to allow a folder")
    candidate = Path(text.strip()).expanduser()
    path = (candidate if candidate.is_absolute() else roots[0] / candidate).resolve()
    if not any(path == root or root in path.parents for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise DataError(f"{text.strip()}: outside the data folder(s) this server allows ({allowed})")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder on the server")
    return path


def spool_upload(upload: BinaryIO, suffix: str, folder: Path | None = None) -> Path:
    """Copy an uploaded file to a private temporary file (loaders need a path) in ``folder`` (by default
    this machine's temporary folder; a job queue's inbox for a job's data); the caller deletes it."""
    with tempfile.NamedTemporaryFile(prefix="fer_lab_upload_", suffix=suffix, delete=False, dir=folder) as handle:
        try:
            shutil.copyfileobj(upload, handle, length=1 << 20)
        except BaseException:
            handle.close()
            Path(handle.name).unlink(missing_ok=True)  # a partial upload is not left behind
            raise
    return Path(handle.name)
