#!/usr/bin/env python3
"""Summarizes the JUnit XML files of a PgBouncer test suite run (scripts/pgbouncer-suite).

Prints passed / failed / errored / skipped per test file, the totals, and one line per test
that did not pass with the first line of its message, so a run can be read without its logs.
"""
import sys
import xml.etree.ElementTree as ET
from collections import OrderedDict
from pathlib import Path

KINDS = ("passed", "failed", "errored", "skipped")


def outcome(case):
    """Returns (kind, message) for one <testcase>; an error in teardown after a pass or a
    failure still counts, as pytest reports both."""
    kind, message = "passed", ""
    for child in case:
        tag = child.tag
        if tag in ("failure", "error"):
            text = child.get("message") or (child.text or "")
            if kind in ("passed", "skipped"):
                kind = "failed" if tag == "failure" else "errored"
                message = text
        elif tag == "skipped" and kind == "passed":
            kind, message = "skipped", child.get("message") or ""
    first = next((line for line in message.splitlines() if line.strip()), "")
    return kind, first.strip()[:200]


def main(paths):
    files = OrderedDict()
    problems = []
    for path in paths:
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as exc:
            print(f"summarize: {path}: {exc}", file=sys.stderr)
            continue
        # scripts/pgbouncer-suite names each file's XML <test file>-<n>.xml; a pytest that
        # died early reports its error under a classname that names no test file.
        module = path.stem.rsplit("-", 1)[0]
        for case in root.iter("testcase"):
            counts = files.setdefault(module, dict.fromkeys(KINDS, 0))
            kind, message = outcome(case)
            counts[kind] += 1
            if kind in ("failed", "errored"):
                problems.append((module, case.get("name"), kind, message))

    width = max([len(name) for name in files] + [len("file")])
    print(f"{'file':<{width}}  passed  failed  errored  skipped")
    totals = dict.fromkeys(KINDS, 0)
    for name, counts in files.items():
        print(f"{name:<{width}}  {counts['passed']:6}  {counts['failed']:6}  "
              f"{counts['errored']:7}  {counts['skipped']:7}")
        for kind in KINDS:
            totals[kind] += counts[kind]
    print(f"{'total':<{width}}  {totals['passed']:6}  {totals['failed']:6}  "
          f"{totals['errored']:7}  {totals['skipped']:7}")
    if problems:
        print("\nnot passed:")
        for module, name, kind, message in problems:
            print(f"  {kind:7} {module}::{name}: {message}")
    print(f"\npgbouncer-suite: {totals['passed']} passed, {totals['failed']} failed, "
          f"{totals['errored']} errored, {totals['skipped']} skipped")
    return 1 if totals["failed"] or totals["errored"] else 0


if __name__ == "__main__":
    sys.exit(main([Path(p) for p in sys.argv[1:]]))
