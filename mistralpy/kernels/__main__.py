"""`python -m mistralpy.kernels`: build the native kernels now (exit code 1 if they cannot be built)."""

import sys

from . import _state, build

if __name__ == "__main__":
    if build() is None:
        print(f"native kernels could not be built: {_state['failed']}", file=sys.stderr)
        sys.exit(1)
    print("native kernels built")
