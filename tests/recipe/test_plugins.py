"""`plugins:` in a recipe imports the user's modules before the recipe is checked, so what they register (here an
objective) is usable from the command line, not only from Python."""
import textwrap

from vlp.cli import main

PLUGIN = '''
from vlp.objectives import Objective, register

@register("plugin_margin")
class PluginMargin(Objective):
    def __init__(self, margin: float = 0.2, **execution):
        super().__init__(**execution)
        self.margin = margin

    def compute(self, x, y, t, b=None):
        return {"loss": (self.margin - (x * y).sum(1)).relu().mean()}
'''

RECIPE = """
model: {arch: ViT-B-32}
objective: {name: plugin_margin, params: {margin: 0.3}}
"""


def _files(tmp_path, plugins: str):
    (tmp_path / "my_vlp_plugin.py").write_text(textwrap.dedent(PLUGIN))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE + plugins)
    return str(recipe)


def test_a_plugin_registers_an_objective_for_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["recipe", "show", "--check", _files(tmp_path, "")]) == 2  # not imported: the objective does not exist
    assert "unknown objective 'plugin_margin'" in capsys.readouterr().err
    assert main(["recipe", "show", "--check", _files(tmp_path, "plugins: [my_vlp_plugin]\n")]) == 0
    assert "plugin_margin" in capsys.readouterr().out


def test_a_missing_plugin_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "sub").mkdir()
    assert main(["recipe", "show", _files(tmp_path / "sub", "plugins: [no_such_vlp_plugin]\n")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "plugins[0]: cannot import 'no_such_vlp_plugin'" in err
