"""`vlp train` ends by printing the final evaluation, as `vlp eval` prints one."""
from __future__ import annotations

import pandas as pd

from helpers.shards import png
from helpers.train_support import recipe_dict, write_recipe
from vlp.cli import main


def test_vlp_train_prints_the_final_evaluation(tmp_path, capsys):
    pd.DataFrame({"image": [png(i) for i in range(16)], "caption": [f"row {i}" for i in range(16)]}).to_parquet(
        tmp_path / "t.parquet")
    assert main(["data", "build", "table", str(tmp_path / "t.parquet"), str(tmp_path / "data"),
                 "--test-fraction", "0.25", "--retrieval", "--per-shard", "4"]) == 0
    recipe = recipe_dict(str(tmp_path / "data" / "train" / "*.tar"), tmp_path, duration="2 steps", batch_size=4)
    recipe["model"]["config"]["vision_cfg"]["image_size"] = 12
    recipe["eval"] = {"datasets": [{"name": "held_out", "task": "retrieval", "path": str(tmp_path / "data" / "test")}],
                      "workers": 0, "pictures": False}
    capsys.readouterr()
    assert main(["train", str(write_recipe(tmp_path / "run.yaml", recipe))]) == 0
    out = capsys.readouterr().out
    assert "evaluation at step 2:" in out
    table = out.split("evaluation at step 2:")[1].split("done:")[0]
    assert "held_out" in table and "R@1" in table
