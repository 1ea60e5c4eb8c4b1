"""Batch-1 static-shape copies of FER Lab's LiteRT files, for runtimes that want static shapes (LiteRT.js).

A stored ``models/<name>.tflite`` (``fer_core.inference.predict.to_tflite``) has input shape
``[1, 48, 48, 1]`` but shape signature ``[-1, 48, 48, 1]`` (a dynamic batch, which LiteRT resizes per
call). Two ways to a static copy:

- :func:`batch_one_copy` rewrites the flatbuffer's shape signatures, every ``-1`` made ``1``: the same
  operators and the same weights, so the same outputs bit for bit (what the browser should get);
- :func:`converted_batch_one` converts the Keras model again with TensorFlow's converter on a fixed
  ``[1, 48, 48, 1]`` input, as ``to_tflite`` does (with the card's weight type). For a float32 model
  that matches the stored file within float rounding; for an int8 model (``default``) it cannot: the
  stored file was converted from the float32 networks before they were stored with int8 kernels, and
  reconverting from those (expanded back to floats) flips a few int8 roundings, which the
  dynamically quantised activations amplify to about 1e-2 in the probabilities.

    python scripts/browser_runtime/static_shape.py default /tmp/default_b1.tflite
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import flatbuffers
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from fer_core.registry.store import StoredModel

#: The flatbuffer's file identifier (the TFLite schema's).
TFLITE_IDENTIFIER = b"TFL3"


def batch_one_copy(lite: bytes, batch: int = 1) -> tuple[bytes, int]:
    """The LiteRT flatbuffer with every dynamic (-1) dimension of every tensor's shape signature set to
    ``batch``, and how many tensors changed. Weights and operators are untouched."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(lite), 0)
    changed = 0
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            signature = tensor.shapeSignature
            if signature is None or -1 not in list(signature):
                continue
            tensor.shapeSignature = np.array([batch if d == -1 else d for d in signature], dtype=np.int32)
            if tensor.shape is not None and len(tensor.shape) == len(signature):
                tensor.shape = np.array([batch if s == -1 else d for s, d in zip(signature, tensor.shape)],
                                        dtype=np.int32)
            changed += 1
    builder = flatbuffers.Builder(len(lite) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output()), changed


def _float32_network(stored: StoredModel):
    """The stored Keras model computing in float32 from float32 kernels (an int8-stored model's
    ``Int8Conv2D`` kernels expanded back), as ``to_tflite`` was given it when the model was saved."""
    import keras

    from fer_core.training.networks import build_ensemble, float32_copy

    model = stored.model
    card = stored.card
    if card.weights_dtype == "float32":
        return model
    if card.arch == "ensemble":
        members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
        arches = [member.arch for member in card.training.members] if card.training.members else []
        if len(arches) != len(members):
            raise ValueError(f"{stored.name}: the card names {len(arches)} members, the model has {len(members)}")
        return build_ensemble([float32_copy(m, arch, m.name) for m, arch in zip(members, arches)], stored.name)
    return float32_copy(model, card.arch, stored.name)


def converted_batch_one(stored: StoredModel) -> bytes:
    """The stored model converted again by TensorFlow's converter with a fixed batch-1 input, with the
    card's weight type as ``fer_core.inference.predict.to_tflite`` converts it."""
    import keras

    from fer_core.inference.predict import to_tflite

    network = _float32_network(stored)
    size = stored.card.preprocessing.size
    inputs = keras.Input((size, size, 1), batch_size=1)
    return to_tflite(keras.Model(inputs, network(inputs)), stored.card.weights_dtype)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a stored model's name (models/<name>.tflite)")
    parser.add_argument("output", type=Path, help="where to write the batch-1 .tflite")
    parser.add_argument("--convert", action="store_true",
                        help="convert the Keras model again instead of rewriting the stored file's shapes")
    args = parser.parse_args(argv)
    from fer_core.registry.store import ModelStore

    stored = ModelStore().load(args.model)
    if args.convert:
        data = converted_batch_one(stored)
    else:
        if stored.lite is None:
            parser.error(f"{args.model} has no current .tflite file")
        data, changed = batch_one_copy(stored.lite)
        print(f"{changed} tensors given a static batch of 1")
    args.output.write_bytes(data)
    print(f"wrote {args.output} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
