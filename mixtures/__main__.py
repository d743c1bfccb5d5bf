"""``python -m mixtures RECIPE [--set field=value ...]``: check a recipe, print its plan."""

from __future__ import annotations

import argparse
import sys

from manifests.configs import ConfigError
from mixtures.recipe import check_recipe, load_recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixtures", description=__doc__)
    parser.add_argument("recipe", help="a stage recipe YAML")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="override a field"
    )
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe, args.set)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problems = check_recipe(recipe)
    if problems:
        print(f"{args.recipe}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    from mixtures.sampler import build_plan, format_summary

    plan = build_plan(recipe)
    print(f"{recipe.stage} (seed {recipe.seed})")
    print(format_summary(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
