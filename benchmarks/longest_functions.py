"""The package's longest functions: every function or method (nested ones too) longer than a limit, longest first,
with the median length for scale. The length is from the `def` line to the last line of the body (decorators not
counted). Static (AST) only.

    python benchmarks/longest_functions.py [--root crrecon_pipeline] [--limit 60] [--json]
"""

import argparse
import ast
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def function_lengths(root: Path) -> list[tuple[int, str]]:
    """(lines, "file:line name") of every function under `root`."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                out.append((node.end_lineno - node.lineno + 1, where))
    return sorted(out, reverse=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="crrecon_pipeline")
    ap.add_argument("--limit", type=int, default=60, help="report functions longer than this many lines")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the text report")
    args = ap.parse_args()
    lengths = function_lengths(ROOT / args.root)
    over = [(n, where) for n, where in lengths if n > args.limit]
    result = {"functions": len(lengths), "median_lines": statistics.median(n for n, _ in lengths),
              "longest_lines": lengths[0][0], "over_limit": {where: n for n, where in over}}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['functions']} functions, median {result['median_lines']} lines, longest {result['longest_lines']};"
          f" {len(over)} over {args.limit} lines:")
    for n, where in over:
        print(f"  {n:4d}  {where}")


if __name__ == "__main__":
    main()
