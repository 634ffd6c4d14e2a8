"""TensorBoard's embedding projector for an autoencoder's latent codes.

The write-up this project grew from shows MNIST codes clustering by digit in the projector; this writes
what the projector plugin reads from a run folder: the codes of validation images as a checkpointed
variable, the images as one sprite sheet (so each point shows its image), their labels as metadata,
and `projector_config.pbtxt` tying them together. Only fixed-size models: a photo codec's latent is a
spatial map whose size depends on the image, and its points would mean nothing to look at.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

SPRITE_LIMIT = 8192  # the projector's largest sprite sheet, in pixels a side
TENSOR_NAME = "embedding/.ATTRIBUTES/VARIABLE_VALUE"


def sprite_sheet(images: np.ndarray) -> np.ndarray:
    """uint8 [S, S, 3]: the images row by row on a square grid (the projector's sprite layout), blank
    cells black; grey images become RGB."""
    count, height, width, channels = images.shape
    side = math.ceil(math.sqrt(count))
    sheet = np.zeros((side * height, side * width, 3), np.uint8)
    pixels = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    for i, image in enumerate(pixels):
        row, col = divmod(i, side)
        sheet[row * height : (row + 1) * height, col * width : (col + 1) * width] = image[..., :3]
    return sheet


def most_images(height: int, width: int, limit: int) -> int:
    """How many images of this size fit on the largest sprite sheet (and `limit`)."""
    per_side = SPRITE_LIMIT // max(height, width)
    return min(limit, per_side * per_side)


def write_projector(log_dir: Path, codes: np.ndarray, images: np.ndarray, labels: np.ndarray | None) -> Path:
    """Write the projector's files for `codes` [N, ...] of `images` [N, H, W, C] into `log_dir`; returns
    the config file. Codes are flattened to one vector per image."""
    from tensorboard.plugins import projector

    log_dir.mkdir(parents=True, exist_ok=True)
    vectors = np.asarray(codes, np.float32).reshape(len(codes), -1)
    # save (not write): the `checkpoint` state file is how the plugin finds the variable in the run folder
    tf.train.Checkpoint(embedding=tf.Variable(vectors)).save(str(log_dir / "embedding.ckpt"))
    Image.fromarray(sprite_sheet(images)).save(log_dir / "sprite.png")
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = TENSOR_NAME
    embedding.sprite.image_path = "sprite.png"
    embedding.sprite.single_image_dim.extend([int(images.shape[2]), int(images.shape[1])])  # width, height
    if labels is not None:
        # one column: no header line (the projector's rule for single-column metadata)
        (log_dir / "metadata.tsv").write_text("".join(f"{int(v)}\n" for v in labels[: len(vectors)]))
        embedding.metadata_path = "metadata.tsv"
    projector.visualize_embeddings(str(log_dir), config)
    return log_dir / "projector_config.pbtxt"
