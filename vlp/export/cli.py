"""`vlp export CHECKPOINT_OR_RUN_DIR OUT_DIR [--format open_clip|transformers|onnx ...] [--weights raw|ema]
[--push-to-hub ORG/NAME] [--public] [--revision B]`."""
from __future__ import annotations

import sys

from vlp.run_dir import WEIGHTS


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write open_clip / transformers folders and a model card; "
                                                  "optionally push to the Hugging Face Hub")
    parser.add_argument("source", help="run dir (latest checkpoint), checkpoint dir or exported open_clip folder")
    parser.add_argument("out_dir", help="folder to write (must be empty or absent unless --overwrite)")
    parser.add_argument("--format", dest="formats", action="append", choices=["open_clip", "transformers", "onnx"],
                        help="formats to write (repeatable; open_clip is always written); default: open_clip, plus "
                             "transformers when the architecture is expressible; onnx: OUT_DIR/onnx, the two "
                             "encoders and preprocess.json (pip install vlp[onnx])")
    parser.add_argument("--weights", choices=WEIGHTS, default="raw",
                        help="raw: the trained weights (default); ema: their moving average (runs with "
                             "train.ema_decay)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    parser.add_argument("--license", default="apache-2.0", help="license in the model card metadata")
    parser.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload OUT_DIR to this Hub model repo")
    parser.add_argument("--public", action="store_true", help="create the Hub repo public (default: private, as in "
                                                             "the recipe's export.private)")
    parser.add_argument("--revision", metavar="BRANCH", help="Hub branch to push to (created when missing)")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from vlp.export.api import export
    from vlp.export.layers import NotExportable
    from vlp.export.onnx_encoders import MissingExtra
    from vlp.export.push import PushError
    from vlp.models.checkpoints import CheckpointError
    from vlp.run_lock import RunLocked
    from vlp.write_errors import WriteError

    flag = next((f for f, given in (("--public", args.public), ("--revision", args.revision)) if given), None)
    if flag and not args.push_to_hub:
        print(f"error: {flag} applies to the Hub push: pass --push-to-hub ORG/NAME", file=sys.stderr)
        return 2
    try:
        export(args.source, args.out_dir, formats=args.formats, overwrite=args.overwrite, license=args.license,
               push_to_hub=args.push_to_hub, private=not args.public, revision=args.revision,
               weights=args.weights)
    except (NotExportable, FileExistsError, FileNotFoundError, ValueError, PushError, CheckpointError,
            RunLocked, WriteError, MissingExtra) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
