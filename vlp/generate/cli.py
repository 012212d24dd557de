"""`vlp generate --model RUN_OR_EXPORT --image PATH [--image ...] [--method greedy|beam] [--beams N]
[--max-tokens N] [--weights raw|ema]`: one caption per image, one per line."""
from __future__ import annotations

import sys

from vlp.run_dir import WEIGHTS


def register(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="caption images with a trained CoCa's decoder")
    parser.add_argument("--model", required=True, help="run dir (latest checkpoint), checkpoint dir or exported "
                                                       "open_clip folder of a CoCa")
    parser.add_argument("--image", dest="images", action="append", required=True, help="image file (repeatable)")
    parser.add_argument("--method", choices=["greedy", "beam"], default="beam", help="decoding (default: beam)")
    parser.add_argument("--beams", type=int, help="beam width (--method beam; default 6)")
    parser.add_argument("--max-tokens", type=int, default=30, help="longest caption in tokens, start and end "
                                                                   "included (capped at the context length)")
    parser.add_argument("--weights", choices=WEIGHTS, default="raw", help="raw (default) or ema weights")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from vlp.generate import generate
    from vlp.models.checkpoints import CheckpointError

    if args.beams is not None and (args.method == "greedy" or args.beams < 1):
        problem = "is a width of 1 or more" if args.beams < 1 else "applies to --method beam, not greedy"
        print(f"error: --beams {problem}", file=sys.stderr)
        return 2
    width = {} if args.beams is None else {"beams": args.beams}  # unset: generate's default
    try:
        captions = generate(args.model, args.images, args.method, max_tokens=args.max_tokens, weights=args.weights,
                            device=args.device, **width)
    except (FileNotFoundError, ValueError, CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(captions))
    return 0
