"""`python -m mistralpy.kernels`: build the native kernels now, or wait for the build at work (exit code 1 if they
cannot be built). `--rebuild` forgets a recorded failure (and the finished build) and builds again.
`--builder` is the builder process itself (started by `kernels.build()` and by engines that find no build)."""

from __future__ import annotations

import argparse
import sys

from . import KernelBuildError, build, build_dir, enabled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mistralpy.kernels", description=__doc__)
    parser.add_argument("--rebuild", action="store_true", help="forget a failed (or finished) build; build again")
    parser.add_argument("--builder", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--wait", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.builder:
        return _be_the_builder(args.wait, args.rebuild)
    if not enabled():
        print("native kernels are turned off (MISTRALPY_NATIVE=0)", file=sys.stderr)
        return 1
    print(f"native kernels: {build_dir().path} (log: build.log there)")
    try:
        module = build(rebuild=args.rebuild)
    except KernelBuildError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"native kernels built: {module.__file__}")
    return 0


def _be_the_builder(wait: bool, rebuild: bool) -> int:
    from . import builder
    from .build_dir import BuildDir
    from .build_key import current_key

    key = current_key()
    return builder.run(BuildDir.of(key), key, wait=wait, rebuild=rebuild)


if __name__ == "__main__":
    sys.exit(main())
