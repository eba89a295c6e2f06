"""The documentation's relative links resolve (files and #anchors), and the
README stays a short page."""
import os
import os.path as osp
import re

import pytest

from tiny_runs import ROOT

LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


def markdown_files():
    files = [osp.join(ROOT, 'README.md'), osp.join(ROOT, 'CHANGELOG.md')]
    for folder in ('docs', 'configs'):
        for base, _, names in os.walk(osp.join(ROOT, folder)):
            files += [osp.join(base, n) for n in names if n.endswith('.md')]
    return sorted(files)


def anchors(path):
    """GitHub's anchors of a markdown file's headings."""
    found = set()
    in_code = False
    for line in open(path):
        if line.startswith('```'):
            in_code = not in_code
        if in_code or not line.startswith('#'):
            continue
        title = line.lstrip('#').strip().lower()
        slug = re.sub(r'[^\w\- ]', '', title).replace(' ', '-')
        found.add(slug)
    return found


@pytest.mark.parametrize('path', markdown_files(), ids=lambda p: osp.relpath(p, ROOT))
def test_every_relative_link_resolves(path):
    broken = []
    for target in LINK.findall(open(path).read()):
        if re.match(r'^[a-z]+://', target) or target.startswith('mailto:'):
            continue
        file, _, anchor = target.partition('#')
        resolved = osp.normpath(osp.join(osp.dirname(path), file)) if file else path
        if not osp.exists(resolved):
            broken.append(target)
        elif anchor and resolved.endswith('.md') and anchor not in anchors(resolved):
            broken.append(target)
    assert not broken, f'{osp.relpath(path, ROOT)}: {broken}'


def test_the_readme_is_short_and_has_the_two_commands():
    text = open(osp.join(ROOT, 'README.md')).read()
    assert len(text.splitlines()) <= 300
    assert 'bash tools/run_tests.sh' in text
    assert 'bash tools/setup_env.sh && .venv/bin/python tools/demo_fashion_mnist.py' in text
    assert 'bash tools/run_tests.sh' in open(osp.join(ROOT, '.ci', 'run')).read() or \
        'tools/run_tests.sh' in open(osp.join(ROOT, '.ci', 'run')).read()
