"""Classify images with an exported model and nothing but onnxruntime, numpy and Pillow.

    python docs/examples/onnx_predict.py outputs/docs/model.onnx photos/*.png
"""

import json
import sys

import numpy as np
import onnxruntime
from PIL import Image

model, images = sys.argv[1], sys.argv[2:]
settings = json.load(open(model + ".json"))  # written beside the file by scripts/export_onnx.py
session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])


def prepare(path: str) -> np.ndarray:
    """What the model's image processor does: RGB, shortest edge to the size, centre crop, rescale, normalise."""
    image = Image.open(path).convert(settings["convert"])
    scale = settings["resize_shortest_edge"] / min(image.size)
    image = image.resize((int(image.width * scale), int(image.height * scale)), Image.BILINEAR)
    height, width = settings["center_crop"]
    left, top = (image.width - width) // 2, (image.height - height) // 2
    pixels = np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.float32)
    pixels = (pixels * settings["rescale_factor"] - settings["image_mean"]) / settings["image_std"]
    return pixels.transpose(2, 0, 1).astype(np.float32)


(logits,) = session.run(["logits"], {"pixel_values": np.stack([prepare(path) for path in images])})
probabilities = np.exp(logits - logits.max(1, keepdims=True))
probabilities /= probabilities.sum(1, keepdims=True)
for path, row in zip(images, probabilities, strict=True):
    top = row.argsort()[::-1][:3]
    print(f"{path}: " + ", ".join(f"{settings['id2label'][str(i)]} {row[i]:.3f}" for i in top))
