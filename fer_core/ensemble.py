"""Ensembles: stored models averaged into one model, stored and served like any other.

Two networks trained apart make partly different mistakes, so the mean of their probabilities
is more accurate than either (the default model is such an ensemble). The ensemble is written
with float16 weights, which halves its file at no measurable cost in accuracy.
"""

from __future__ import annotations

from fer_core.data import FaceDataset
from fer_core.errors import DataError
from fer_core.store import ModelStore, StoredModel

ENSEMBLE_ARCH = "ensemble"


def _members(store: ModelStore, names: list[str], name: str) -> list[StoredModel]:
    """The stored members, checked to be single networks that prepare faces the same way."""
    from fer_core.models import ARCHITECTURES

    if len(set(names)) != len(names) or len(names) < 2:
        raise DataError(f"an ensemble needs at least two different models, got {', '.join(names)}")
    if name in names:
        raise DataError(f"the ensemble cannot replace its member {name!r}: choose another name")
    members = [store.load(member) for member in names]
    for member in members:
        if member.card.get("arch") not in ARCHITECTURES:
            raise DataError(f"{member.name} ({member.card.get('arch')}) is not a single network of a known "
                            "architecture; ensembles are made of those")
    if len({str(member.card.get("preprocessing")) for member in members}) != 1:
        raise DataError("the members prepare faces differently (their cards' preprocessing differ)")
    return members


def save_ensemble(
    store: ModelStore,
    names: list[str],
    name: str,
    validation: FaceDataset,
    *,
    data_description: str,
    command: str,
) -> dict:
    """Average the stored models ``names`` into the model ``name``, scored on ``validation``.

    The card lists the members with their own figures; its training minutes are theirs summed,
    and its ``reproduce`` is their commands followed by ``command``. Returns the card.
    """
    from fer_core.evaluate import save_evaluated
    from fer_core.models import build_ensemble, copy_in_precision
    from fer_core.preprocess import Preprocessing

    members = _members(store, names, name)

    def ensemble(dtype: str):
        return build_ensemble([copy_in_precision(m.model, m.card["arch"], dtype, m.name) for m in members], name)

    trainings = [member.card.get("training") or {} for member in members]
    training = {
        "data": data_description,
        "validation_rows": len(validation),
        "minutes": round(sum(float(t.get("minutes") or 0.0) for t in trainings), 1),
        "members": [{"name": m.name, "arch": m.card["arch"], "parameters": m.card.get("parameters"),
                     "accuracy": (m.card.get("metrics") or {}).get("accuracy"),
                     "flip_tta": (m.card.get("metrics") or {}).get("flip_tta"),
                     "minutes": t.get("minutes"), "recipe": t.get("recipe")}
                    for m, t in zip(members, trainings)],
    }
    reproduce = " && ".join([m.card["reproduce"] for m in members if m.card.get("reproduce")] + [command])
    description = f"Ensemble of {', '.join(names)}: the mean of their probabilities."
    return save_evaluated(ensemble("float32"), name, validation, store=store, half_precision_copy=ensemble("float16"),
                          preprocessing=Preprocessing.from_dict(members[0].card["preprocessing"]),
                          card_fields={"arch": ENSEMBLE_ARCH, "training": training, "reproduce": reproduce,
                                       "description": description})
