"""Command line: convert an official Learn-to-Steer ``.pth`` classifier into this pack's ``.safetensors`` format.

Usage::

    python -m l2s_core.convert SRC.pth DST.safetensors [--family sd14|sd2|flux_schnell|flux_dev]

The source is read with ``torch.load(weights_only=True)`` only; files that need arbitrary code to unpickle are
refused. This module owns the argument parsing and exit codes; the work is :func:`.checkpoint.convert_official`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .checkpoint import convert_official
from .families import PUBLISHED_FAMILIES

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter.

    Args:
        argv: command-line arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 when the input is invalid or unsafe (the reason is logged to stderr, no traceback).
    """
    parser = argparse.ArgumentParser(
        prog="python -m l2s_core.convert",
        description="Convert an official Learn-to-Steer .pth classifier into a .safetensors file with metadata.",
    )
    parser.add_argument("src", help="official checkpoint (.pth/.pt), e.g. sd2.pth")
    parser.add_argument("dst", help="output file (.safetensors)")
    parser.add_argument(
        "--family",
        default=None,
        help=f"target model family; needed unless SRC is named after one of {', '.join(PUBLISHED_FAMILIES)}",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        loaded = convert_official(args.src, args.dst, family=args.family)
    except (ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 1
    logger.info(
        "Wrote %s: family %s, %d channels, relations %s, trained steps %s of %d.",
        args.dst,
        loaded.family,
        loaded.channels,
        list(loaded.relations),
        list(loaded.trained_steps),
        loaded.trained_num_steps,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
