"""`python -m runtime.stage`: build the C stage (make setup runs this)."""
from common.errors import run_cli


def main(argv: list[str]) -> int:
    from . import build
    print(f"runtime stage: {build()}")
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(run_cli(main))
