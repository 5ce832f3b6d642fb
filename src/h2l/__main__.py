"""``python -m h2l``: the CLI, so that ``torchrun -m h2l distill ...`` and real-process tests need no script."""

from .cli import main

if __name__ == "__main__":
    main()
