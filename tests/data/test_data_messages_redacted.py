"""Data errors and warnings quote shard URLs; passwords, signatures and tokens in them are masked as in the model
card, in the one line `vlp train` prints as in the exception a Python caller catches."""
import pytest

from helpers.train_support import recipe_dict, write_recipe
from vlp.cli import main
from vlp.data import DataError
from vlp.data.epoch import warn_about_sizes

SECRETS = ("hunter2", "deadbeef", "hf_" + "a" * 34)
SPEC = f"https://alice:{SECRETS[0]}@example.invalid/shard-{{000..001}}.tar?X-Amz-Signature={SECRETS[1]}"


def test_the_epoch_size_error_masks_shard_credentials(tmp_path, capsys):
    path = write_recipe(tmp_path / "run.yaml", recipe_dict(SPEC, tmp_path / "runs"))
    assert main(["train", str(path)]) == 1  # a remote spec: its size is unknown before reading
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: epoch size unknown for https://***@example.invalid/shard-{000..001}.tar?***")
    assert not any(secret in line for secret in SECRETS[:2])


def test_every_data_error_and_size_warning_is_masked():
    url = f"pipe:curl -s -H 'Authorization: Bearer {SECRETS[2]}' https://example.invalid/x.tar"
    assert SECRETS[2] not in str(DataError(f"shard {url}: connection reset"))
    with pytest.warns(UserWarning) as caught:
        warn_about_sizes({SPEC.replace("{000..001}", "000"): (3, 4)}, epoch=0)
    [message] = [str(w.message) for w in caught]
    assert "sizes.json says 4" in message and not any(secret in message for secret in SECRETS)
