#!/usr/bin/env python3
"""Checks that every code block in the guides is a compiled snippet.

Every fenced code block in cpp, c++ or cmake in docs/guides/*.md must be immediately preceded
by a line

    <!-- snippet: PATH#NAME -->

where PATH is relative to the repository root and lies under docs/snippets/, examples/ or
tests/consumer/, and the block's text must equal the region NAME of that file exactly. A region
is the lines strictly between a line ending with `[snippet:NAME]` and a line ending with
`[/snippet:NAME]` (`// [snippet:NAME]` in C++, `# [snippet:NAME]` in CMake or shell), compared
after removing the lines' common leading indentation. Blocks in other languages (sh, console,
text) need no marker.

Failures (exit status 1): a block without a marker, a marker without a block, a missing file
or region, a block that differs from its region, a region opened twice or never closed.
Regions that no guide uses are reported as warnings only.

Usage: docs/check_guides.py [--root DIR] [GUIDE.md ...]   (default: every docs/guides/*.md)
Python 3 standard library only.
"""

import argparse
import difflib
import re
import sys
from pathlib import Path

CHECKED_LANGUAGES = {"cpp", "c++", "cmake"}
SNIPPET_DIRS = ("docs/snippets/", "examples/", "tests/consumer/")
SOURCE_SUFFIXES = {".cpp", ".hpp", ".h", ".cc", ".txt", ".cmake", ".sh", ".py"}

MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(?P<path>[^#\s]+)#(?P<name>[\w.-]+)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\s`]*)")
OPEN = re.compile(r"\[snippet:(?P<name>[\w.-]+)\]\s*$")
CLOSE = re.compile(r"\[/snippet:(?P<name>[\w.-]+)\]\s*$")


def dedent(lines):
    """Removes the common leading white space of the non-blank lines."""
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    return [line[cut:] if line.strip() else "" for line in lines]


def parse_regions(path, text, errors):
    """Returns {name: (first line number, [lines])} for the regions of one source file."""
    regions = {}
    open_regions = {}  # name -> (line number of the opening marker, collected lines)
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip()
        closing = CLOSE.search(line)
        opening = None if closing else OPEN.search(line)
        if closing:
            name = closing.group("name")
            if name not in open_regions:
                errors.append(f"{path}:{number}: [/snippet:{name}] closes a region never opened")
                continue
            start, body = open_regions.pop(name)
            if name not in regions:  # a second definition was reported when it opened
                regions[name] = (start, dedent(body))
            continue
        if opening:
            name = opening.group("name")
            if name in open_regions:
                errors.append(f"{path}:{number}: snippet region '{name}' is opened again "
                              f"inside itself (opened at line {open_regions[name][0]})")
                continue
            if name in regions:
                errors.append(f"{path}:{number}: snippet region '{name}' is defined twice "
                              f"(first at line {regions[name][0]})")
            open_regions[name] = (number, [])
            continue
        # Regions may nest; marker lines belong to no region's text.
        for _, body in open_regions.values():
            body.append(line)
    for name, (start, _) in open_regions.items():
        errors.append(f"{path}:{start}: snippet region '{name}' is never closed "
                      f"(no [/snippet:{name}])")
    return regions


def parse_guide(path, text, errors):
    """Returns [(marker line number or None, block line number, language, [lines], target)]."""
    blocks = []
    lines = text.splitlines()
    i = 0
    pending_marker = None  # (line number, path, name)
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence:
            language = fence.group("info").lower()
            closing = fence.group("fence")
            indent = len(fence.group("indent"))
            start = i + 1
            body = []
            i += 1
            while i < len(lines) and not (lines[i].strip().startswith(closing) and
                                          lines[i].strip().strip(closing[0]) == ""):
                body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
                i += 1
            if i == len(lines):
                errors.append(f"{path}:{start}: code block is never closed")
            blocks.append((pending_marker, start, language, [b.rstrip() for b in body]))
            pending_marker = None
            i += 1
            continue
        marker = MARKER.match(line)
        if pending_marker is not None:
            errors.append(f"{path}:{pending_marker[0]}: snippet marker for "
                          f"{pending_marker[1]}#{pending_marker[2]} is not immediately "
                          f"followed by a code block")
            pending_marker = None
        if marker:
            pending_marker = (i + 1, marker.group("path"), marker.group("name"))
        elif "<!--" in line and "snippet" in line:
            errors.append(f"{path}:{i + 1}: malformed snippet marker; write "
                          f"<!-- snippet: PATH#NAME -->")
        i += 1
    if pending_marker is not None:
        errors.append(f"{path}:{pending_marker[0]}: snippet marker for "
                      f"{pending_marker[1]}#{pending_marker[2]} is not followed by a code block")
    return blocks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the repository root (default: the parent of docs/)")
    parser.add_argument("guides", nargs="*", type=Path,
                        help="the guides to check (default: docs/guides/*.md)")
    args = parser.parse_args()
    root = args.root.resolve()

    guides = args.guides or sorted((root / "docs" / "guides").glob("*.md"))
    if not guides:
        print(f"check_guides: no guides in {root / 'docs' / 'guides'}", file=sys.stderr)
        return 1

    errors = []
    warnings = []
    sources = {}  # relative path -> regions, parsed on first use

    def regions_of(relative):
        if relative not in sources:
            text = (root / relative).read_text(encoding="utf-8")
            sources[relative] = parse_regions(relative, text, errors)
        return sources[relative]

    # Every snippet source is parsed, used or not, so that duplicates are found everywhere.
    snippet_dir = root / "docs" / "snippets"
    for source in sorted(snippet_dir.rglob("*")) if snippet_dir.is_dir() else []:
        if source.is_file() and source.suffix in SOURCE_SUFFIXES:
            regions_of(source.relative_to(root).as_posix())

    used = set()
    checked = 0
    for guide in guides:
        guide = guide.resolve()
        try:
            shown = guide.relative_to(root).as_posix()
        except ValueError:
            shown = str(guide)
        for marker, start, language, body in parse_guide(shown, guide.read_text("utf-8"),
                                                          errors):
            if language not in CHECKED_LANGUAGES:
                if marker is not None:
                    errors.append(f"{shown}:{marker[0]}: snippet marker on a '{language or 'plain'}'"
                                  f" block; only {', '.join(sorted(CHECKED_LANGUAGES))} blocks "
                                  f"are checked")
                continue
            if marker is None:
                errors.append(f"{shown}:{start}: {language} code block without a snippet marker; "
                              f"put <!-- snippet: docs/snippets/FILE.cpp#NAME --> on the line "
                              f"before it and the code in that region of a compiled file")
                continue
            _, relative, name = marker
            where = f"{shown}:{start}: snippet {relative}#{name}"
            if not relative.startswith(SNIPPET_DIRS) or ".." in Path(relative).parts:
                errors.append(f"{where}: the file must be under {', '.join(SNIPPET_DIRS)}")
                continue
            if not (root / relative).is_file():
                errors.append(f"{where}: no such file")
                continue
            regions = regions_of(relative)
            if name not in regions:
                errors.append(f"{where}: {relative} has no region '{name}' "
                              f"(// [snippet:{name}] ... // [/snippet:{name}])")
                continue
            used.add((relative, name))
            checked += 1
            expected = regions[name][1]
            shown_body = dedent(body)
            if shown_body != expected:
                diff = difflib.unified_diff(expected, shown_body,
                                            f"{relative}#{name} (line {regions[name][0]})",
                                            f"{shown} (line {start})", lineterm="", n=1)
                errors.append(f"{where}: the block differs from the region:\n  " +
                              "\n  ".join(diff))

    for relative, regions in sorted(sources.items()):
        for name, (start, _) in sorted(regions.items()):
            if (relative, name) not in used and relative.startswith("docs/snippets/"):
                warnings.append(f"{relative}:{start}: snippet region '{name}' is used by no guide")

    for warning in warnings:
        print(f"check_guides: warning: {warning}", file=sys.stderr)
    for error in errors:
        print(f"check_guides: error: {error}", file=sys.stderr)
    if errors:
        print(f"check_guides: {len(errors)} error(s) in {len(guides)} guide(s)", file=sys.stderr)
        return 1
    print(f"check_guides: {len(guides)} guide(s), {checked} code block(s), all match their "
          f"snippets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
