"""Compose the Fashion-MNIST semantic segmentation set (mmseg's folder layout).

    python tools/data/make_segmentation_set.py --out data/fashion_seg [--num-train 1000] [--num-val 200]

Writes ``<out>/img_dir/{train,val}/*.png`` (RGB), ``<out>/ann_dir/{train,val}/*.png``
(label maps: 0 background, Fashion-MNIST label + 1 for each garment's own
pixels) and ``<out>/meta.json``, for mmseg's stock ``BaseSegDataset``. Does
nothing if a complete set with the same parameters is already there. See
``fmkt_mm/datasets/segmentation_set.py``.
"""
import argparse
import time

from fmkt_mm.datasets.segmentation_set import make_segmentation_set


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--num-train', type=int, default=1000)
    parser.add_argument('--num-val', type=int, default=200)
    parser.add_argument('--image-size', type=int, default=64)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    start = time.time()
    written = make_segmentation_set(args.out, args.num_train, args.num_val, args.image_size, args.seed)
    print(f'{"wrote" if written else "already complete:"} {args.out} '
          f'({args.num_train} train / {args.num_val} val images, {time.time() - start:.1f} s)')


if __name__ == '__main__':
    main()
