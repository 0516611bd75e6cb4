"""``python -m convert``: Caffe open_nsfw → verified SavedModel + .tflite in ``model/``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from convert.build import convert
from convert.source import SourceError
from convert.verify import VerificationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convert", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("model"), help="artifact directory")
    parser.add_argument("--cache", type=Path, default=Path(".cache"), help="download cache")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # TensorFlow's C++ INFO/WARNING chatter is not actionable here; errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        result = convert(args.out, args.cache, force=args.force)
    except (SourceError, VerificationError) as exc:
        logging.getLogger("convert").error("%s", exc)
        return 2
    if result.rebuilt:
        parity = result.manifest["parity"]
        onnx = parity["onnx"]
        print(
            f"built {result.out} in {result.seconds:.1f}s: "
            f"onnx max|Δnsfw|={onnx.get('max_abs_nsfw', 'n/a')} "
            f"rel_logit={onnx.get('max_rel_logit', 'n/a')} "
            f"tflite max|Δnsfw|={parity['tflite_vs_saved_model']['max_abs_nsfw']}"
        )
    else:
        print(f"model up to date: {result.out} (version {result.manifest['version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
