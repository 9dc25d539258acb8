#!/usr/bin/env python3
"""Reference token ids from Hugging Face `tokenizers` (and, with --transformers, AutoTokenizer) for comparing with
`llmc tokenize` / llmc::Tokenizer.

usage: tokenizer_reference.py TOKENIZER [--text S]... [--file F]... [--strings LIST.json] [--no-special]
                              [--transformers] [--decode]
TOKENIZER is a model directory or a tokenizer.json. --strings reads a JSON list of strings, or of objects with a
"text" key (e.g. the "tokenizer" list of a goldens.json). Prints one JSON object:
{"tokenizers": VERSION, "tokenizer_json": PATH, "add_special_tokens": BOOL,
 "results": [{"source": ..., "ids": [...], "transformers_ids": [...]?, "decoded": ...?}, ...]}
Ids are Tokenizer.from_file(PATH).encode(text, add_special_tokens).ids with truncation and padding off, which is
what llmc matches. Runs anywhere `tokenizers` is installed (e.g. the GPU machine); needs no GPU.
"""
import argparse
import json
import os
import sys

import tokenizers
from tokenizers import Tokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tokenizer")
    ap.add_argument("--text", action="append", default=[])
    ap.add_argument("--file", action="append", default=[])
    ap.add_argument("--strings")
    ap.add_argument("--no-special", action="store_true", help="add_special_tokens=False")
    ap.add_argument("--transformers", action="store_true", help="also encode with transformers.AutoTokenizer")
    ap.add_argument("--decode", action="store_true", help="also decode the ids (skip_special_tokens=True)")
    a = ap.parse_args()

    path = a.tokenizer
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    tok = Tokenizer.from_file(path)
    tok.no_truncation()
    tok.no_padding()
    add_special = not a.no_special

    inputs = [("text:%d" % i, t) for i, t in enumerate(a.text)]
    for f in a.file:
        with open(f, encoding="utf-8", newline="") as fh:  # exact bytes, as llmc tokenize --file reads them
            inputs.append(("file:" + f, fh.read()))
    if a.strings:
        with open(a.strings, encoding="utf-8") as fh:
            items = json.load(fh)
        if isinstance(items, dict) and "tokenizer" in items:
            items = items["tokenizer"]
        for i, item in enumerate(items):
            inputs.append(("strings:%d" % i, item["text"] if isinstance(item, dict) else item))
    if not inputs:
        ap.error("give at least one --text, --file or --strings")

    hf = None
    report = {"tokenizers": tokenizers.__version__, "tokenizer_json": path, "add_special_tokens": add_special}
    if a.transformers:
        import transformers
        from transformers import AutoTokenizer

        report["transformers"] = transformers.__version__
        hf = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)))

    results = []
    for source, text in inputs:
        ids = tok.encode(text, add_special_tokens=add_special).ids
        r = {"source": source, "chars": len(text), "ids": ids}
        if hf is not None:
            r["transformers_ids"] = hf(text, add_special_tokens=add_special)["input_ids"]
            r["transformers_agree"] = r["transformers_ids"] == ids
        if a.decode:
            r["decoded"] = tok.decode(ids, skip_special_tokens=True)
            r["round_trip"] = r["decoded"] == text
        results.append(r)
    report["results"] = results
    json.dump(report, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
