"""``python -m corduroy2``: the ``corduroy2`` command."""

from .cli import run

if __name__ == "__main__":
    run()
