"""`earlywarn` command line: run, demo, simulate, replay, rules check, alarms, report, sql.

Heavy modules are imported inside each command so that `earlywarn --help` and `rules check` start fast.
Exit codes: 0 ok, 1 failure at run time, 2 bad usage / bad config or rule file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from earlywarn import __version__
from earlywarn.app import build_engine, start_runner  # light; also what scripts and tests import from here
from earlywarn.errors import ConfigError, ConfigErrors, EarlywarnError

log = logging.getLogger("earlywarn")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _load_config(path: str | None) -> Any:
    from earlywarn.config import Config, load_config

    return load_config(path) if path else Config()


# ---------------------------------------------------------------------------------------------------
# run


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load_config(args.config)
    runner = start_runner(cfg)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %s: draining and stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    log.info("earlywarn %s running: broker %s, store %s", __version__, cfg.broker.url, cfg.store.path)
    while not stop.wait(0.5):
        if runner.error is not None:
            break
    runner.stop()
    if runner.api_server is not None:
        runner.api_server.stop()
    runner.engine.store.close()
    if runner.error is not None:
        print(f"earlywarn: engine stopped on an error: {runner.error}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------------
# replay


def cmd_replay(args: argparse.Namespace) -> int:
    import time

    from earlywarn.pipeline import REPLAY_CHUNK, read_replay_files, run_replay

    cfg = _load_config(args.config)
    t0 = time.perf_counter()
    batch, rejects = read_replay_files(args.inputs)
    t_read = time.perf_counter() - t0
    engine = build_engine(cfg, replay=True)
    res = run_replay(engine, batch, rejects, store_readings=not args.no_readings, chunk=args.chunk or REPLAY_CHUNK)
    engine.store.close()
    dt = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "readings": res.readings,
                "stored": res.stored,
                "rejects": res.rejects,
                "signals": res.signals,
                "late": res.late,
                "duplicates": res.duplicates,
                "read_seconds": round(t_read, 3),
                "seconds": round(dt, 3),
                "readings_per_second": round(res.readings / dt) if dt > 0 else None,
            }
        )
    )
    return 0


# ---------------------------------------------------------------------------------------------------
# rules check


def cmd_rules_check(args: argparse.Namespace) -> int:
    from earlywarn.rules.spec import check_path

    path = args.path or os.path.join(os.getcwd(), "rules")
    problems = check_path(path)
    if args.sites:
        from earlywarn.config import load_sites
        from earlywarn.rules.spec import load_packs, rules_for_sites

        try:
            rules_for_sites(load_packs(path), load_sites(args.sites), args.sites)
        except ConfigErrors as e:
            problems.extend(e.errors)
        except ConfigError as e:
            problems.append(e)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {path}", file=sys.stderr)
        return 2
    print(f"{path}: ok")
    return 0


# ---------------------------------------------------------------------------------------------------
# alarms (through the HTTP API of a running engine)


def _api(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    import urllib.error
    import urllib.request

    url = args.url.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    token = os.environ.get(args.token_env)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        raise EarlywarnError(f"{method} {path}: HTTP {e.code}: {detail}") from None
    except urllib.error.URLError as e:
        raise EarlywarnError(f"cannot reach the engine's API at {args.url}: {e.reason}") from None


def cmd_alarms(args: argparse.Namespace) -> int:
    if args.action == "list":
        q = []
        for k in ("site", "state", "severity"):
            v = getattr(args, k, None)
            if v:
                q.append(f"{k}={v}")
        if args.open:
            q.append("open=true")
        out = _api(args, "GET", "/api/alarms" + ("?" + "&".join(q) if q else ""))
        rows = out.get("alarms", out) if isinstance(out, dict) else out
        for a in rows:
            print(
                f"{a['alarm_id']}  {a['site']:<14} {a['severity']:<6} {a['state']:<13} {a['rule_id']:<24} "
                f"{a['tag']:<22} raised {a['raised_at']}  tier {a.get('escalation_tier', '')}"
            )
        return 0
    if args.action == "show":
        print(json.dumps(_api(args, "GET", f"/api/alarms/{args.alarm_id}"), indent=2, ensure_ascii=False))
        return 0
    body: dict[str, Any] = {"note": args.note or ""}
    if args.action == "close":
        body["disposition"] = args.disposition
    if args.action == "shelve":
        body["duration"] = args.duration
        body["reason"] = args.note or ""
    out = _api(args, "POST", f"/api/alarms/{args.alarm_id}/{args.action}", body)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


# ---------------------------------------------------------------------------------------------------
# reports and sql


def _report_con(args: argparse.Namespace) -> Any:
    import duckdb

    if args.db:
        path = args.db
    else:
        path = _load_config(args.config).store.path
    if not os.path.exists(path):
        raise EarlywarnError(f"no DuckDB file at {path}")
    return duckdb.connect(path, read_only=True)


def cmd_report(args: argparse.Namespace) -> int:
    from earlywarn import reports

    if args.url:  # a running engine: ask its API (the engine holds the file's write lock)
        q = [f"format={args.format if args.format != 'parquet' else 'json'}"]
        for k in ("since", "until", "as_of"):
            v = getattr(args, k)
            if v:
                q.append(f"{k}={v}")
        if args.by:
            q.append("by=" + ",".join(args.by))
        import urllib.request

        req = urllib.request.Request(args.url.rstrip("/") + f"/api/reports/{args.name}?" + "&".join(q))
        token = os.environ.get(args.token_env)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=60) as resp:
            sys.stdout.write(resp.read().decode())
        return 0
    con = _report_con(args)
    df = reports.run_report(
        con, args.name, since=args.since, until=args.until, as_of=args.as_of, by=args.by or ()
    )
    text = reports.render(df, args.format, args.output)
    if text is not None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from earlywarn import reports

    path = args.db or _load_config(args.config).store.path
    df = reports.run_sql(path, args.query)
    text = reports.render(df, args.format, args.output)
    if text is not None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


# ---------------------------------------------------------------------------------------------------
# demo and simulate


def cmd_demo(args: argparse.Namespace) -> int:
    from earlywarn.demo import run_demo

    return run_demo(duration_s=args.duration, speed=args.speed, seed=args.seed, workdir=args.dir)


def cmd_simulate(args: argparse.Namespace, rest: Sequence[str]) -> int:
    import simulators

    return int(simulators.cli_main(list(rest)))


# ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="earlywarn", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"earlywarn {__version__}")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("run", help="run the engine: MQTT in, rules, alarms, DuckDB")
    s.add_argument("--config", required=True)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("replay", help="evaluate recorded readings through the same engine, into the store")
    s.add_argument("--config", required=True)
    s.add_argument("--no-readings", action="store_true", help="do not store the readings themselves")
    s.add_argument("--chunk", type=int, default=None, metavar="ROWS",
                   help="readings per step (default 500 000); any size gives the same result")
    s.add_argument("inputs", nargs="+", help="CSV, Parquet or NDJSON files with site, tag, ts, value[, quality]")
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser("rules", help="rule files")
    rs = s.add_subparsers(dest="rules_cmd", required=True)
    c = rs.add_parser("check", help="validate rule files (a file or a directory; default ./rules)")
    c.add_argument("path", nargs="?")
    c.add_argument("--sites", help="also check a sites file's overrides against the rules")
    c.set_defaults(func=cmd_rules_check)

    s = sub.add_parser("alarms", help="list, show and act on alarms of a running engine (HTTP API)")
    s.add_argument("--url", default=os.environ.get("EARLYWARN_URL", "http://127.0.0.1:8080"))
    s.add_argument("--token-env", default="EARLYWARN_TOKEN", help="environment variable holding the API token")
    acts = s.add_subparsers(dest="action", required=True)
    a = acts.add_parser("list")
    a.add_argument("--site")
    a.add_argument("--state")
    a.add_argument("--severity")
    a.add_argument("--open", action="store_true")
    for name in ("show", "ack", "close", "comment", "shelve", "unshelve"):
        a = acts.add_parser(name)
        a.add_argument("alarm_id")
        if name != "show":
            a.add_argument("--note", default="")
        if name == "close":
            a.add_argument("--disposition", required=True)
        if name == "shelve":
            a.add_argument("--duration", required=True, help="e.g. 30m, 2h")
    s.set_defaults(func=cmd_alarms)

    s = sub.add_parser("report", help="closure and alarm-performance reports")
    s.add_argument("name", choices=["closure", "non-responding", "bad-actors", "load", "online", "risk"])
    g = s.add_mutually_exclusive_group()
    g.add_argument("--config")
    g.add_argument("--db", help="a DuckDB file (of a stopped engine, or a snapshot)")
    g.add_argument("--url", help="a running engine's API, e.g. http://127.0.0.1:8080")
    s.add_argument("--token-env", default="EARLYWARN_TOKEN")
    s.add_argument("--since", help="RFC 3339; default 30 days before --until")
    s.add_argument("--until", help="RFC 3339; default now")
    s.add_argument("--as-of", dest="as_of", help="RFC 3339; default now")
    s.add_argument("--by", nargs="*", help="site plant district rule severity day|week|month")
    s.add_argument("--format", default="table", choices=["table", "csv", "json", "parquet"])
    s.add_argument("--output")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("sql", help="read-only SQL on the history (no file or network access)")
    s.add_argument("query")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--config")
    g.add_argument("--db")
    s.add_argument("--format", default="table", choices=["table", "csv", "json", "parquet"])
    s.add_argument("--output")
    s.set_defaults(func=cmd_sql)

    s = sub.add_parser("demo", help="everything on one machine: broker, engine, simulated plants")
    s.add_argument("--duration", type=float, default=120.0, help="seconds of wall time")
    s.add_argument("--speed", type=float, default=60.0, help="simulated seconds per wall second")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--dir", default=".", help="where the DuckDB file and logs go")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("simulate", help="publish simulated plants / load to a broker", add_help=False)
    s.set_defaults(func=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "simulate":
        return cmd_simulate(argparse.Namespace(), argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except ConfigErrors as e:
        for err in e.errors:
            print(f"earlywarn: {err}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"earlywarn: {e}", file=sys.stderr)
        return 2
    except EarlywarnError as e:
        print(f"earlywarn: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # a bad argument value (a time, a report name): say it, no traceback
        print(f"earlywarn: {e}", file=sys.stderr)
        return 2
