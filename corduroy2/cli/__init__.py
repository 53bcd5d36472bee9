"""The ``corduroy2`` command (also ``python -m corduroy2``), built on the blocking front door.

    corduroy2 [--url URL] [-q] COMMAND ...

Data goes to stdout, progress and errors to stderr. Exit status: 0 done, 1 a CouchDB or
transport error (or documents ``load`` could not write), 2 a usage error, 130 interrupted.
The guide's command-line chapter describes every command.

Nothing here is imported by ``import corduroy2``; rich (progress bars) only when a bar is drawn.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .. import CouchError
from . import commands, dump, load, replicate
from .commands import Context
from .connect import DEFAULT_URL, Server, connect
from .output import Output

__all__ = ["main", "run", "build_parser"]

Command = Callable[[argparse.Namespace, Context], int]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    # The global options are accepted after the command too (``corduroy2 dbs --url ...``).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=argparse.SUPPRESS,
        help=f"the server (default: $COUCHDB_URL, else {DEFAULT_URL}); credentials in it, in "
             "$COUCHDB_USER/$COUCHDB_PASSWORD or in ~/.netrc")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars (they are drawn only on a terminal anyway)")

    parser = argparse.ArgumentParser(
        prog="corduroy2", parents=[common],
        description="Talk to a CouchDB server: read, write, dump, load, replicate, follow.",
        epilog="Exit status: 0 ok, 1 CouchDB or transport error, 2 usage error.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Command, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(run=run)
        return p

    def opt(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--opt", action="append", metavar="KEY=VALUE",
                       help=f"{what} option (repeatable); VALUE is JSON if it parses, else text")

    p = command("info", commands.info, "the server's welcome object, or a database's info")
    p.add_argument("db", nargs="?", metavar="DB")
    command("dbs", commands.dbs, "list the databases")

    p = command("get", commands.get, "print one document")
    p.add_argument("db", metavar="DB")
    p.add_argument("id", metavar="ID")
    p.add_argument("--rev", help="that revision")
    opt(p, "a query")

    p = command("put", commands.put, "create or update the document in FILE (- for stdin)")
    p.add_argument("db", metavar="DB")
    p.add_argument("file", metavar="FILE|-")

    p = command("view", commands.view, "stream a view's rows (or _all_docs's), one per line")
    p.add_argument("db", metavar="DB")
    p.add_argument("view", metavar="DDOC/VIEW")
    opt(p, "a view")

    p = command("find", commands.find, "stream the docs a Mango selector matches")
    p.add_argument("db", metavar="DB")
    p.add_argument("selector", metavar="SELECTOR", help='JSON, e.g. \'{"type": "post"}\'')
    opt(p, "a _find")

    p = command("changes", commands.changes,
                "print the changes feed (then {\"last_seq\": ...}); --follow to keep going")
    p.add_argument("db", metavar="DB")
    p.add_argument("--since", help="the seq to start after (default: the beginning)")
    p.add_argument("--follow", "-f", action="store_true",
                   help="follow the feed until interrupted, reconnecting when needed")
    opt(p, "a _changes")

    p = command("dump", dump.dump,
                "write every document as NDJSON, streamed (memory stays flat)")
    p.add_argument("db", metavar="DB")
    p.add_argument("-o", "--output", metavar="FILE", help="the file (default: stdout)")
    p.add_argument("--attachments", action="store_true", help="include attachments (inline)")
    p.add_argument("--resume", action="store_true",
                   help="go on with the interrupted dump in FILE from its last complete line")

    p = command("load", load.load,
                "write the documents of an NDJSON file (a dump) with batched _bulk_docs")
    p.add_argument("db", metavar="DB")
    p.add_argument("file", metavar="FILE|-")
    p.add_argument("--batch", type=int, default=500, metavar="N",
                   help="documents per _bulk_docs request (default: 500)")
    p.add_argument("--parallel", type=int, default=4, metavar="K",
                   help="batches in flight at once (default: 4)")
    p.add_argument("--create", action="store_true", help="create DB if it does not exist")
    p.add_argument("--keep-revs", action="store_true",
                   help="keep the documents' revisions (new_edits=false: a faithful restore "
                        "into an empty database; existing documents are not checked)")

    p = command("replicate", replicate.replicate,
                "replicate SRC to TGT (db names on --url's server, or URLs) and follow it")
    p.add_argument("source", metavar="SRC")
    p.add_argument("target", metavar="TGT")
    p.add_argument("--continuous", action="store_true",
                   help="keep replicating; follow until interrupted")
    p.add_argument("--create-target", action="store_true", help="create TGT if missing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)  # exits 2 on a usage error
    server: Server | None = None
    try:
        server = connect(getattr(args, "url", None), os.environ)
        ctx = Context(server, Output(), progress=_draw_progress(args))
        status = int(args.run(args, ctx))
        ctx.out.flush()
        return status
    except CouchError as exc:
        return _fail(exc, EXIT_ERROR, server)
    except (ValueError, TypeError) as exc:
        # Bad input on the command line: a JSON argument, a db name, a URL, a file's content.
        return _fail(exc, EXIT_USAGE, server)
    except BrokenPipeError:
        # The reader went away (``| head``): say nothing more.
        _silence_stdout()
        return EXIT_ERROR
    except OSError as exc:  # a file that cannot be read or written
        return _fail(exc, EXIT_ERROR, server)
    except KeyboardInterrupt:
        sys.stderr.write("corduroy2: interrupted\n")
        return EXIT_INTERRUPTED


def _draw_progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def _fail(exc: BaseException, status: int, server: Server | None) -> int:
    """The one-line message: the error's class and text, the passwords in use scrubbed (they
    should never reach an error's text; this is the last line of defence)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for secret in server.secrets if server is not None else ():
        if secret:
            text = text.replace(secret, "***")
    sys.stderr.write(f"corduroy2: {type(exc).__name__}: {text}\n")
    return status


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again
    (the way the ``signal`` module's docs recommend for a closed pipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())
