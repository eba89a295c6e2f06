"""Export the student of a distillation checkpoint as a plain mmdet/mmpretrain checkpoint.

    python tools/export_student.py CONFIG CHECKPOINT OUT [--data-dir DIR] [--allow-unsafe-pickle]

The result loads with ``strict=True`` into the stock model built from the
student config, without fmkt_mm installed. The plain student's config is
written beside it (OUT without its extension + ``_config.py``), and the
checkpoint's ``meta['dataset_meta']`` carries the class names, so that

    from mmdet.apis import init_detector
    model = init_detector('student_config.py', 'student.pth')

labels boxes with the dataset's classes. A Fashion-MNIST config's dataset
(fmkt_mm's FashionMNISTGz) becomes mmpretrain's own FashionMNIST, reading
unpacked copies of the same files written once into --data-dir.
"""
import argparse

from fmkt_mm.export import export_student


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the distillation config')
    parser.add_argument('checkpoint', help='a checkpoint written while distilling')
    parser.add_argument('out', help='where to write the plain student checkpoint')
    parser.add_argument('--data-dir', default='data/fashion_mnist',
                        help='where the unpacked Fashion-MNIST files for the stock dataset go '
                             '(Fashion-MNIST configs only; default: %(default)s)')
    parser.add_argument('--allow-unsafe-pickle', action='store_true',
                        help='read CHECKPOINT with full unpickling, which can execute code: only for '
                             'files you trust. Checkpoints written by fmkt_mm never need it')
    args = parser.parse_args()
    summary = export_student(args.config, args.checkpoint, args.out, data_dir=args.data_dir,
                             allow_unsafe_pickle=args.allow_unsafe_pickle)
    print(f"wrote {summary['num_tensors']} student tensors to {summary['out']} "
          f"(deploy mode: {summary['deploy_mode']})")
    print(f"wrote the plain student's config to {summary['config']}")
    if summary['config_needs_fmkt_mm']:
        print('NOT PLAIN: the config still names fmkt_mm components, so it imports fmkt_mm: '
              + '; '.join(summary['config_needs_fmkt_mm']))
    else:
        print('the config is plain: it loads without fmkt_mm')
    classes = (summary['dataset_meta'] or {}).get('classes')
    print(f'classes: {list(classes)}' if classes else
          'no dataset_meta (class names) in the checkpoint or the config')
    if summary['not_exported']:
        print('NOT EXPORTED: ' + summary['not_exported'])


if __name__ == '__main__':
    main()
