"""Compose the Fashion-MNIST detection set (COCO format) used by the demos.

    python tools/data/make_detection_set.py --out data/fashion_det \
        --num-train 1500 --num-val 300 --image-size 128 --seed 0

Writes ``<out>/{train,val}/*.png``, ``<out>/annotations/instances_{train,val}.json``
and ``<out>/meta.json``; category ids are Fashion-MNIST label + 1 (1..10).
Does nothing if a complete set with the same parameters is already there.
See ``fmkt_mm/datasets/detection_set.py`` for the details.
"""
import argparse
import time

from fmkt_mm.datasets.detection_set import make_detection_set


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Compose a COCO-format detection set from Fashion-MNIST.')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--num-train', type=int, default=1500,
                        help='number of train images (default: 1500)')
    parser.add_argument('--num-val', type=int, default=300,
                        help='number of val images (default: 300)')
    parser.add_argument('--image-size', type=int, default=128,
                        help='side of the square images in pixels (default: 128)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    parser.add_argument('--object-size', type=int, nargs=2, default=(20, 64),
                        metavar=('MIN', 'MAX'),
                        help='range of the side of a pasted garment (default: 20 64)')
    parser.add_argument('--num-objects', type=int, nargs=2, default=(1, 4),
                        metavar=('MIN', 'MAX'),
                        help='range of the garments per image (default: 1 4)')
    parser.add_argument('--max-iou', type=float, default=0.1,
                        help='largest IoU between two boxes of an image (default: 0.1)')
    parser.add_argument('--source-root', default=None,
                        help='directory of the Fashion-MNIST IDX files (default: '
                        '$FMKT_FASHION_MNIST_ROOT or /usr/share/datasets/fashion-mnist)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    written = make_detection_set(
        args.out, args.num_train, args.num_val, image_size=args.image_size,
        seed=args.seed, object_size=tuple(args.object_size),
        num_objects=tuple(args.num_objects), max_iou=args.max_iou,
        source_root=args.source_root)
    if written:
        print(f'wrote {args.num_train} train / {args.num_val} val images to '
              f'{args.out} in {time.time() - start:.1f} s')
    else:
        print(f'{args.out} is up to date (same parameters); nothing to do')


if __name__ == '__main__':
    main()
