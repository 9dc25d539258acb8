#!/usr/bin/env python3
"""docs/service.md's metrics table against the metrics the code registers (ctest DeployMetricsDocTest).

llmc's metrics are registered through MetricsRegistry::AddCounter / AddGauge / AddHistogram (server/metrics.h),
the name a string literal, the labels a braced list of literals. The test reads every such call in the C++ sources
of server/, worker/, storage/ and common/ (tests left out) and every row of the table under "## Metrics" in
docs/service.md (first column `llmc_...`, then type and labels), and fails when:

  * a registered metric has no row, or a row names a metric that is not registered;
  * a row's type (counter, gauge, histogram) or labels differ from the registration;
  * a string literal "llmc_..." in server/ or worker/ (a metric made some other way) is not a registered metric;
  * the table or the registrations cannot be found (fewer than 10 of either: the parsing broke).

Usage: metrics_doc_test.py [--doc PATH] [--src DIR]  (defaults: the checkout's docs/service.md and its root).
"""

import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, os.pardir, os.pardir, os.pardir))
SOURCE_DIRS = ("server", "worker", "storage", "common")
LITERAL_DIRS = ("server", "worker")  # where a metric made some other way would be
KINDS = {"AddCounter": "counter", "AddGauge": "gauge", "AddHistogram": "histogram"}
# String literals that start with llmc_ and are not metrics: the API token prefix (server/auth.cc).
NOT_METRICS = {"llmc_"}


def call_arguments(text, start):
    """The top-level arguments of the call whose '(' is at text[start], as source strings."""
    args, depth, i, cur = [], 0, start, []
    while i < len(text):
        c = text[i]
        if c == '"':  # a string literal, escapes included
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        if c in "({[":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif c in ")}]":
            depth -= 1
            if depth == 0:
                args.append("".join(cur).strip())
                return args
        elif c == "," and depth == 1:
            args.append("".join(cur).strip())
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    raise ValueError(f"unbalanced call at offset {start}")


def registered_metrics(src_root):
    """{name: (kind, labels, where)} of every Add* registration, and the llmc_ literals seen (name -> where)."""
    metrics, literals = {}, {}
    for d in SOURCE_DIRS:
        for dirpath, _, files in os.walk(os.path.join(src_root, d)):
            for f in sorted(files):
                if not f.endswith((".cc", ".h")) or f.endswith("_test.cc"):
                    continue
                path = os.path.join(dirpath, f)
                text = open(path, encoding="utf-8").read()
                rel = os.path.relpath(path, src_root)
                for m in re.finditer(r"(?<!::)\b(AddCounter|AddGauge|AddHistogram)\s*\(", text):
                    args = call_arguments(text, m.end() - 1)
                    name = re.fullmatch(r'"([^"]*)"', args[0])
                    if not name:  # the declarations in metrics.h, or a name built at run time
                        if f != "metrics.h":
                            raise AssertionError(f"{rel}: {m.group(1)} with a name that is not a literal: {args[0]}")
                        continue
                    labels = re.findall(r'"([^"]*)"', args[2]) if len(args) > 2 else []
                    where = f"{rel}:{text.count(chr(10), 0, m.start()) + 1}"
                    if name.group(1) in metrics:
                        raise AssertionError(f"{where}: {name.group(1)} registered twice")
                    metrics[name.group(1)] = (KINDS[m.group(1)], sorted(labels), where)
                for m in re.finditer(r'"(llmc_[A-Za-z0-9_]*)', text if d in LITERAL_DIRS else ""):
                    literals.setdefault(m.group(1), f"{rel}:{text.count(chr(10), 0, m.start()) + 1}")
    return metrics, literals


def documented_metrics(doc_path):
    """{name: (type, labels, line)} of the rows of the table under '## Metrics' in docs/service.md."""
    rows, section = {}, None
    for n, line in enumerate(open(doc_path, encoding="utf-8"), 1):
        if line.startswith("## "):
            section = line[3:].strip()
            continue
        if section != "Metrics" or not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`([^`]+)`", cells[0])
        if not name or len(cells) < 4:
            raise AssertionError(f"{doc_path}:{n}: a metrics row that is not | `name` | type | labels | definition |")
        labels = sorted(re.findall(r"`([^`]+)`", cells[2]))
        if name.group(1) in rows:
            raise AssertionError(f"{doc_path}:{n}: {name.group(1)} has two rows")
        rows[name.group(1)] = (cells[1], labels, n)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--doc", default=os.path.join(REPO, "docs", "service.md"))
    ap.add_argument("--src", default=REPO)
    a = ap.parse_args()
    try:
        code, literals = registered_metrics(a.src)
        doc = documented_metrics(a.doc)
    except (AssertionError, ValueError, OSError) as e:
        print(f"FAILED: {e}")
        return 1
    problems = []
    if len(code) < 10:
        problems.append(f"only {len(code)} metric registrations found under {a.src} ({', '.join(SOURCE_DIRS)}): "
                        "has the way metrics are registered changed? Update this test")
    if len(doc) < 10:
        problems.append(f"only {len(doc)} rows found in the table under '## Metrics' of {a.doc}")
    for name, (kind, labels, where) in sorted(code.items()):
        if name not in doc:
            problems.append(f"{name} ({kind}, {where}) is not in {a.doc}'s metrics table: add a row defining it")
            continue
        dkind, dlabels, line = doc[name]
        if dkind != kind:
            problems.append(f"{a.doc}:{line}: {name} is a {kind} in the code ({where}), the table says {dkind}")
        if dlabels != labels:
            problems.append(f"{a.doc}:{line}: {name} has labels {labels} in the code ({where}), the table says {dlabels}")
    for name, (_, _, line) in sorted(doc.items()):
        if name not in code:
            problems.append(f"{a.doc}:{line}: {name} is in the metrics table but no code registers it: remove the row "
                            "or register the metric")
    for lit, where in sorted(literals.items()):
        if lit not in code and lit not in NOT_METRICS:
            problems.append(f"{where}: \"{lit}\" looks like a metric but is not registered with "
                            "AddCounter/AddGauge/AddHistogram (or add it to NOT_METRICS in this test)")
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        return 1
    print(f"PASSED: {len(code)} metrics registered in the code, each in {os.path.relpath(a.doc, REPO)} with its type "
          "and labels, and no other")
    return 0


if __name__ == "__main__":
    sys.exit(main())
