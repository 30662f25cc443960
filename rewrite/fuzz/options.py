"""The options of ``tensorize fuzz`` and the size of its units of work: what the command
line needs before it runs anything, kept apart from the strategies so that building the
parser imports no hypothesis (some 0.4 s of every command's start)."""

from __future__ import annotations

UNIT_EXAMPLES = 25  # examples per unit of work: small enough to spread, large enough to pay


def add_arguments(parser) -> None:
    """The options of ``tensorize fuzz``."""
    parser.add_argument("--intrinsic", metavar="NAME", default=None,
                        help="fuzz this intrinsic only (default: the host library and the "
                             "emulated built-ins, or every intrinsic --intrinsics-file registers)")
    parser.add_argument("--intrinsics-file", metavar="PATH", default=None,
                        help="fuzz the intrinsics a Python module registers")
    parser.add_argument("--examples", type=int, default=100, metavar="N",
                        help="programs per intrinsic (default 100)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="the campaign's seed (default 0): the same seed draws the same "
                             "programs, whatever --jobs")
    parser.add_argument("--unit", type=int, default=None, metavar="K",
                        help=f"run only unit K (examples {UNIT_EXAMPLES}K to {UNIT_EXAMPLES}K+"
                             f"{UNIT_EXAMPLES - 1}) of each intrinsic: what a failure's replay "
                             "command does")
    parser.add_argument("--json", action="store_true", help="the report as one JSON object on stdout")
