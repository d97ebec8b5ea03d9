#!/usr/bin/env python3
"""Copies the tables of results/report.md (one bench run) into README.md's Performance section.

Usage: scripts/readme-perf.py   (after `scripts/bench.sh --out results`)
Replaces, in README.md, the "Run of ..." paragraph's first line fields, the figure table and
the goals table with those of the report, so the README always shows one run verbatim.
"""
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
report = (root / "results" / "report.md").read_text()
readme_path = root / "README.md"
readme = readme_path.read_text()


def tables(text):
    """The markdown tables of `text`, in order, each as one string."""
    out, cur = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            out.append("\n".join(cur))
            cur = []
    if cur:
        out.append("\n".join(cur))
    return out


rep = tables(report)
old = tables(readme[readme.index("## Performance"):readme.index("## Deliberate differences")])
if len(rep) < 2 or len(old) < 2:
    sys.exit("readme-perf: expected two tables in the report and in README's Performance section")
for o, n in zip(old[:2], rep[:2]):
    readme = readme.replace(o, n, 1)
date = re.search(r"\*\*date:\*\* (.+)", report).group(1)
git = re.search(r"\*\*pen-rs:\*\* git (\w+)", report).group(1)
readme = re.sub(r"Run of [^,]+, command `scripts/bench.sh --out results`, pen-rs git \w+",
                f"Run of {date}, command `scripts/bench.sh --out results`, pen-rs git {git}", readme)
readme_path.write_text(readme)
print(f"README.md: tables of the {date} run (git {git})")
