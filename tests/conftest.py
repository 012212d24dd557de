import os

import pytest

# Never reach a hub from tests: a hub call otherwise hangs ~25 s before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory):
    """(run dir, `build_digits` paths): the trainer tests' tiny CLIP after 200 steps on the bundled scikit-learn
    digits, well above chance (~70% zero-shot top-1) on the held-out CLIP_benchmark-layout sets; ~10 s on 2 cores."""
    from helpers.train_support import recipe_dict, write_recipe

    from data_tools.bundled import build_digits
    from vlp.train import train

    root = tmp_path_factory.mktemp("trained_digits")
    paths = build_digits(root / "data", source="digits", image_size=16)
    recipe = recipe_dict(paths["train"], root / "runs", duration="200 steps", batch_size=64, log_every=50)
    return train(write_recipe(root / "run.yaml", recipe)).run_dir, paths


@pytest.fixture(scope="session")
def evaluated_digits(tmp_path_factory):
    """(run dir, `build_digits` paths): a tiny CLIP trained 60 steps on the bundled digits, evaluated (zero-shot and
    retrieval on 200 held-out images, with pictures) at steps 30 and 60, tracked by TensorBoard and exported to
    RUN_DIR/export; ~25 s on 2 busy cores."""
    from helpers.train_support import recipe_dict, write_recipe

    from data_tools.bundled import build_digits
    from vlp.train import train

    root = tmp_path_factory.mktemp("evaluated_digits")
    paths = build_digits(root / "data", source="digits", image_size=16)
    recipe = recipe_dict(paths["train"], root / "runs", duration="60 steps", batch_size=64, log_every=10)
    recipe["train"]["run_name"] = "digits"
    recipe["eval"] = {"every": "30 steps", "batch_size": 128, "workers": 0, "datasets": [
        {"name": "digits_zeroshot", "task": "zeroshot", "path": paths["zeroshot"], "max_samples": 200},
        {"name": "digits_retrieval", "task": "retrieval", "path": paths["retrieval"], "max_samples": 200}]}
    recipe["logging"]["trackers"] = ["tensorboard"]
    recipe["export"] = {"formats": ["open_clip"]}
    return train(write_recipe(root / "run.yaml", recipe)).run_dir, paths


def pytest_collection_modifyitems(config, items):
    """`cuda` tests need a CUDA device: without one they are skipped, with the reason, rather than failing."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
