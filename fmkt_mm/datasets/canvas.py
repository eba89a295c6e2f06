"""One canvas of the Fashion-MNIST detection set: a dark textured background
with Fashion-MNIST garments pasted on it, and each garment's tight box and
pixel mask (:func:`render_canvas`; the set itself is written by
:func:`~fmkt_mm.datasets.make_detection_set`)."""
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ['BACKGROUND_MAX', 'render_canvas']

#: No background pixel of any channel is brighter than this.
BACKGROUND_MAX = 40

# Placements tried per object before it is dropped from its canvas.
_MAX_TRIES = 20
# A small box may have a low IoU with a large one while lying mostly inside
# it; such a garment would be hidden, so this caps the covered fraction of the
# smaller box of every pair too.
_MAX_COVER = 0.3
# Side of the random colour grid that is upsampled into the background.
_TEXTURE_GRID = 5


def _overlaps(box: Sequence[int], boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Overlap of one ``[x, y, w, h]`` box with ``(K, 4)`` boxes.

    Returns:
        ``(iou, cover)``, both ``(K,)``: the IoU, and the fraction of the
        smaller box of each pair that the intersection covers.
    """
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y2 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area, areas = box[2] * box[3], boxes[:, 2] * boxes[:, 3]
    return inter / (area + areas - inter), inter / np.minimum(area, areas)


def _linear_weights(size: int, grid: int) -> Tuple[np.ndarray, ...]:
    """Indices and weights that linearly upsample ``grid`` samples to
    ``size`` (pixel-centre aligned): ``out = a[i0] * (1 - w) + a[i1] * w``."""
    pos = (np.arange(size) + 0.5) * grid / size - 0.5
    pos = np.clip(pos, 0, grid - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, grid - 1)
    return i0, i1, pos - i0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dark textured ``(size, size, 3)`` uint8 background, at most
    :data:`BACKGROUND_MAX`.

    Only elementwise float64 arithmetic is used (no BLAS, no OpenCV), so the
    result is the same on every machine for a given generator state.
    """
    base = rng.uniform(6.0, 18.0)
    coarse = rng.uniform(-10.0, 10.0, size=(_TEXTURE_GRID, _TEXTURE_GRID, 3))
    i0, i1, w = _linear_weights(size, _TEXTURE_GRID)
    rows = coarse[i0] * (1 - w)[:, None, None] + coarse[i1] * w[:, None, None]
    smooth = rows[:, i0] * (1 - w)[None, :, None] + rows[:, i1] * w[None, :, None]
    # Grey (channel-shared) grain: as textured as colour noise to the eye,
    # but its PNGs are less than half the size.
    noise = rng.normal(0.0, 2.0, size=(size, size, 1))
    return np.clip(np.rint(base + smooth + noise), 0, BACKGROUND_MAX).astype(np.uint8)


def _resize(patch: np.ndarray, side: int) -> np.ndarray:
    """Resize a ``(28, 28)`` uint8 garment to ``(side, side)``."""
    import cv2  # OpenCV comes with mmcv / mmengine
    interp = cv2.INTER_AREA if side < patch.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(patch, (side, side), interpolation=interp)


def _tight_box(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """``(x, y, w, h)`` of the nonzero pixels of a 2-D mask, None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1),
            int(rows[-1] - rows[0] + 1))


def _paste(rng: np.random.Generator, canvas: np.ndarray, boxes: np.ndarray, image: np.ndarray,
           label: int, side_range: Tuple[int, int], max_iou: float) -> Optional[dict]:
    """Tint one garment and paste it where its box overlaps none of
    ``boxes`` too much (at most :data:`_MAX_TRIES` placements tried);
    returns its object dict, or None when every placement failed."""
    image_size = canvas.shape[0]
    lo, hi = side_range
    # Random colour; the brightest channel keeps the garment's intensity.
    tint = rng.uniform(0.5, 1.0, size=3)
    tint /= tint.max()
    for _ in range(_MAX_TRIES):
        side = int(rng.integers(lo, hi + 1))
        x0 = int(rng.integers(0, image_size - side + 1))
        y0 = int(rng.integers(0, image_size - side + 1))
        patch = _resize(image, side)
        local = _tight_box(patch)
        if local is None:  # nothing left of the garment at this scale
            continue
        box = (x0 + local[0], y0 + local[1], local[2], local[3])
        if len(boxes):
            iou, cover = _overlaps(box, boxes)
            if iou.max() > max_iou or cover.max() > _MAX_COVER:
                continue
        colour = np.rint(patch[..., None] * tint).astype(np.uint8)
        region = canvas[y0:y0 + side, x0:x0 + side]
        # Max-compositing keeps earlier garments visible where two of the
        # (square) patches overlap, and adds no seam around the garment.
        np.maximum(region, colour, out=region)
        mask = np.zeros((image_size, image_size), dtype=bool)
        mask[y0:y0 + side, x0:x0 + side] = patch > 0
        return dict(bbox=list(box), label=int(label), mask=mask)
    return None


def render_canvas(rng: np.random.Generator,
                  images: np.ndarray,
                  labels: np.ndarray,
                  image_size: int = 128,
                  object_size: Tuple[int, int] = (20, 64),
                  num_objects: Tuple[int, int] = (1, 4),
                  max_iou: float = 0.1) -> Tuple[np.ndarray, List[dict]]:
    """Compose one canvas from source garments.

    Args:
        rng: The generator every random choice is drawn from.
        images: ``(N, 28, 28)`` uint8 source garments.
        labels: ``(N,)`` their Fashion-MNIST labels in ``0..9``.
        image_size: Side S of the square canvas.
        object_size: Inclusive range of the side of a pasted garment, clipped
            to the canvas.
        num_objects: Inclusive range of the number of garments tried.
        max_iou: Largest IoU allowed between two boxes of the canvas (and
            the intersection may cover at most 30% of the smaller box).

    Returns:
        ``(canvas, objects)``: the ``(S, S, 3)`` uint8 RGB canvas and, per
        pasted garment, ``dict(bbox=[x, y, w, h], label=int, mask=(S, S)
        bool)`` with its tight box in pixels and its own pixels (at least
        one garment is always pasted).
    """
    canvas = _background(rng, image_size)
    side_range = (min(object_size[0], image_size), min(object_size[1], image_size))
    count = int(rng.integers(num_objects[0], num_objects[1] + 1))
    boxes = np.zeros((0, 4), dtype=np.int64)
    objects = []
    for _ in range(count):
        index = int(rng.integers(len(images)))
        obj = _paste(rng, canvas, boxes, images[index], labels[index], side_range, max_iou)
        if obj is not None:
            boxes = np.concatenate([boxes, np.array([obj['bbox']], dtype=np.int64)])
            objects.append(obj)
    return canvas, objects
