"""Upload an exported folder to the Hugging Face Hub; the token comes from HF_TOKEN or the saved login."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from vlp.run_dir import EXPORT_MARKER


class PushError(RuntimeError):
    pass


def push_folder(folder: Path, repo_id: str, private: bool, revision: Optional[str]) -> str:
    """create_repo + (create_branch) + upload_folder; returns the commit URL. Errors never contain the token."""
    from huggingface_hub import HfApi, get_token

    token = get_token()
    try:
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision,
                                   commit_message="Upload model exported by vlp",
                                   ignore_patterns=[EXPORT_MARKER])  # a local guard, meaningless on the Hub
    except Exception as e:  # hub errors can quote request headers; scrub before showing them
        message = f"{type(e).__name__}: {e}"
        raise PushError(f"push to {repo_id} failed: {message.replace(token, '***') if token else message}") from None
    return str(commit.commit_url)
