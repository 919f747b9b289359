"""`casebase db replica create|list|start|stop|promote|drop|wait`: read replicas (hot
standbys on PostgreSQL streaming replication). The library is ``casebase.db.replica``."""

from __future__ import annotations

import argparse
import json


def add_parser(actions) -> None:
    """Add ``replica`` and its actions under ``casebase db``."""
    replica = actions.add_parser(
        "replica",
        help="read replicas: create, list, start, stop, promote, drop, wait",
        description="Hot standbys of the primary, made with pg_basebackup and kept up to date "
        "by PostgreSQL's streaming replication. Point CASEBASE_READ_URL at one to send "
        "searches, briefs and eval there.",
    )
    sub = replica.add_subparsers(dest="replica_command", required=True, metavar="ACTION")
    create = sub.add_parser(
        "create",
        help="copy the primary into DIR (pg_basebackup -R) and start it as a hot standby",
    )
    create.add_argument("dir", help="an empty or new folder for the standby's data")
    create.add_argument(
        "--from",
        dest="source",
        metavar="URL",
        help="the primary (default: DATABASE_URL, else the embedded server)",
    )
    create.add_argument("--name", help="its name (default: the folder's name)")
    create.add_argument("--json", action="store_true")
    create.set_defaults(run=run_create)
    listing = sub.add_parser("list", help="the replicas, their role, lag and WAL kept for them")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=run_list)
    for action, text in (
        ("start", "start a stopped replica (it catches up from its slot)"),
        ("stop", "stop a replica (fast shutdown; the primary keeps WAL for it)"),
        ("promote", "make a standby a primary that accepts writes"),
        ("drop", "stop a replica, drop its slot on the primary and forget it (DIR stays)"),
    ):
        p = sub.add_parser(action, help=text)
        p.add_argument("replica", metavar="NAME|DIR")
        p.set_defaults(run=run_action)
    wait = sub.add_parser(
        "wait", help="wait until the standbys have replayed everything committed so far"
    )
    wait.add_argument("replica", nargs="?", metavar="NAME|DIR", help="default: every standby")
    wait.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    wait.set_defaults(run=run_wait)


def run_create(args: argparse.Namespace) -> int:
    from casebase.db import replica

    state = replica.create(args.dir, source_url=args.source, name=args.name)
    if args.json:
        print(json.dumps(state.to_dict(), indent=2))
    else:
        print(f"replica {state.name} is a hot standby of {state.source}, streaming: {state.url}")
        print(f"  read from it: export CASEBASE_READ_URL='{state.url}'")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from casebase.db import replica_state

    rows = replica_state.states()
    print(
        json.dumps([r.to_dict() for r in rows], indent=2)
        if args.json
        else replica_state.render(rows)
    )
    return 0


def run_action(args: argparse.Namespace) -> int:
    from casebase.db import replica

    action = args.replica_command
    if action == "start":
        state = replica.start(args.replica)
        print(f"replica {state.name} is running ({state.role}): {state.url}")
    elif action == "stop":
        stopped = replica.stop(args.replica)
        print(f"replica {args.replica} " + ("stopped" if stopped else "was not running"))
    elif action == "promote":
        done = replica.promote(args.replica)
        lost = done.not_replayed_bytes
        print(
            f"replica {done.state.name} is now a primary: {done.state.url}"
            + ("" if lost is None else f" ({lost:,} bytes of the old primary's WAL not replayed)")
        )
        print("  stop writing to the old primary; point DATABASE_URL at this one")
    else:
        record = replica.drop(args.replica)
        print(f"replica {record.name} dropped; its folder {record.data_dir} is left as it was")
    return 0


def run_wait(args: argparse.Namespace) -> int:
    from casebase.db import replica

    done = replica.wait(args.replica, timeout=args.timeout)
    if not done:
        print("no running standby to wait for")
    for name, replay in done:
        print(f"replica {name} has replayed up to {replay.target_lsn} ({replay.seconds:.3f} s)")
    return 0
