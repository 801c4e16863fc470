"""Count the string-key lookups in the package: how much of it passes results around as loose dicts.

A lookup is a subscript by a string constant (`record["kind"]`, `d["a"] = ...` counts too: it names a key) or a
`.get("...")` call whose first argument is a string constant. Reported: the total, the distinct keys, the files with
the most, the reads of the record tag `"kind"` and of `"val_mse"`. Static (AST) only, so it runs in a second and
needs nothing but the standard library.

    python benchmarks/count_key_lookups.py [--root crrecon_pipeline] [--top 10] [--json]
"""

import argparse
import ast
import json
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAGS = ("kind", "val_mse")


def string_keys(tree: ast.AST) -> list[tuple[str, str]]:
    """(form, key) of every string key looked up in `tree`, once per lookup; form is "subscript" or "get"."""
    keys = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, str):
            keys.append(("subscript", node.slice.value))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            keys.append(("get", node.args[0].value))
    return keys


def count(root: Path, top: int) -> dict:
    found = {str(path.relative_to(ROOT)): string_keys(ast.parse(path.read_text(), filename=str(path)))
             for path in sorted(root.rglob("*.py"))}
    per_file = {f: [k for _, k in fks] for f, fks in found.items()}
    keys = Counter(k for ks in per_file.values() for k in ks)
    files = Counter({f: len(ks) for f, ks in per_file.items() if ks})
    forms = Counter(form for fks in found.values() for form, _ in fks)
    return {
        "root": str(root.relative_to(ROOT)),
        "lookups": sum(keys.values()),
        "subscripts": forms["subscript"],
        "get_calls": forms["get"],
        "distinct_keys": len(keys),
        "tag_reads": {t: keys[t] for t in TAGS},
        "files_reading": {t: sum(t in ks for ks in per_file.values()) for t in TAGS},
        "top_files": dict(files.most_common(top)),
        "top_keys": dict(keys.most_common(top)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="crrecon_pipeline")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the text report")
    args = ap.parse_args()
    result = count(ROOT / args.root, args.top)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['lookups']} string-key lookups ({result['subscripts']} subscripts,"
          f" {result['get_calls']} .get calls) over {result['distinct_keys']} distinct keys in {result['root']}/")
    for tag in TAGS:
        print(f'  ["{tag}"]: {result["tag_reads"][tag]} lookups in {result["files_reading"][tag]} files')
    print("files with the most:")
    for name, n in result["top_files"].items():
        print(f"  {n:4d}  {name}")
    print("most looked-up keys:")
    for key, n in result["top_keys"].items():
        print(f"  {n:4d}  {key!r}")


if __name__ == "__main__":
    main()
