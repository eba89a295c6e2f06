"""Export the student of a distillation checkpoint as a plain mmdet/mmpretrain checkpoint.

    python tools/export_student.py CONFIG CHECKPOINT OUT

The result loads with ``strict=True`` into the stock model built from the
student config, without fmkt_mm installed.
"""
import argparse

from fmkt_mm.export import export_student


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the distillation config')
    parser.add_argument('checkpoint', help='a checkpoint written while distilling')
    parser.add_argument('out', help='where to write the plain student checkpoint')
    args = parser.parse_args()
    summary = export_student(args.config, args.checkpoint, args.out)
    print(f"wrote {summary['num_tensors']} student tensors to {summary['out']} "
          f"(deploy mode: {summary['deploy_mode']})")
    if summary['not_exported']:
        print('NOT EXPORTED: ' + summary['not_exported'])


if __name__ == '__main__':
    main()
