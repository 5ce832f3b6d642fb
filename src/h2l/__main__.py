"""``python -m h2l``: the CLI, so that ``torchrun -m h2l distill ...`` and real-process tests need no script."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the CLI's modules load: nothing was written yet; the documented code
    sys.stderr.write("error: interrupted; no partial output was written. fix: run the command again\n")
    sys.exit(130)

if __name__ == "__main__":
    main()
