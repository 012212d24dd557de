"""`vlp recipe show RECIPE [--set KEY=VALUE ...] [--check]`: print the fully resolved recipe, headed by what in it runs code."""
from __future__ import annotations

from vlp.recipe.loader import dump_recipe, load_recipe
from vlp.recipe.runs_code import code_it_runs


def add_recipe_arguments(parser, default: str | None = None) -> None:
    """The recipe path (optional when `default` is given) and `--set` overrides, for every command reading a recipe."""
    if default is None:
        parser.add_argument("recipe", help="recipe YAML file")
    else:
        parser.add_argument("recipe", nargs="?", default=default, help=f"recipe YAML file (default: {default})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field by dotted key, e.g. --set optim.lr=1e-3 (repeatable)")


def register(subparsers) -> None:
    recipe = subparsers.add_parser("recipe", help="inspect recipe files")
    actions = recipe.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="print the resolved recipe (bases merged, overrides applied, checked; "
                              "the objective's own rules with --check)")
    add_recipe_arguments(show)
    # the objective's own rules build it, and importing torch would make showing a recipe take seconds
    show.add_argument("--check", action="store_true",
                      help="also apply the objective's own rules (parameters, execution options), as training does")
    show.set_defaults(func=_show)


def _show(args) -> int:
    recipe = load_recipe(args.recipe, args.overrides, objective=args.check)
    code = code_it_runs(recipe)
    if code:  # a YAML comment, so that the output still loads as a recipe
        print(f"# runs code on this machine: {'; '.join(code)}")
    print(dump_recipe(recipe), end="")
    return 0
