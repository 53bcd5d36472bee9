"""``corduroy2 replicate SRC TGT``: start a replication and follow it to its end."""

from __future__ import annotations

import argparse

from .commands import Context


def replicate(args: argparse.Namespace, ctx: Context) -> int:
    raise NotImplementedError
