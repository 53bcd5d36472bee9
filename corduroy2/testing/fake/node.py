"""The fake's one node: its name, its configuration, its statistics and its system figures.

Config values are strings, as CouchDB keeps them (``/_node/_local/_config/couchdb/uuid`` is
``"..."``). The statistics count what the fake really serves: requests by method and status,
and the time each took (a histogram over the most recent requests).
"""

from __future__ import annotations

import gc
import math
import os
import resource
import statistics
import sys
import threading
import time
from collections import Counter, deque
from typing import Any

from .errors import Refusal, bad_request

__all__ = ["Node", "NODE_NAME"]

NODE_NAME = "couchdb@127.0.0.1"
_METHODS = ("COPY", "DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT")
_STATUSES = (200, 201, 202, 204, 206, 301, 304, 400, 401, 403, 404, 405, 406, 409, 412, 413,
             414, 415, 416, 417, 500, 501, 503)


def _defaults(uuid: str, session_timeout: int) -> dict[str, dict[str, str]]:
    return {
        "couchdb": {"uuid": uuid, "database_dir": "./data", "view_index_dir": "./data",
                    "max_document_size": "8000000", "max_dbs_open": "500",
                    "os_process_timeout": "5000", "default_security": "admin_only",
                    "single_node": "true", "users_db_security_editable": "false"},
        "chttpd": {"bind_address": "127.0.0.1", "port": "5984", "backlog": "512",
                   "require_valid_user": "false", "max_http_request_size": "4294967296",
                   "authentication_handlers": "{chttpd_auth, cookie_authentication_handler}, "
                                              "{chttpd_auth, default_authentication_handler}"},
        "chttpd_auth": {"timeout": str(session_timeout), "allow_persistent_cookies": "true",
                        "authentication_db": "_users", "iterations": "10"},
        "cluster": {"q": "2", "n": "1"},
        "replicator": {"max_jobs": "500", "interval": "60000", "max_churn": "20",
                       "worker_processes": "4", "checkpoint_interval": "30000"},
        "uuids": {"algorithm": "sequential", "max_count": "1000"},
        "log": {"level": "info", "writer": "stderr"},
        "query_server_config": {"reduce_limit": "true", "os_process_limit": "100"},
        "global_changes": {"max_event_delay": "25", "max_write_delay": "500"},
    }


class Node:
    """One node's config (section -> key -> str), request statistics and start time."""

    def __init__(self, uuid: str, session_timeout: int, name: str = NODE_NAME) -> None:
        self.name = name
        self.config = _defaults(uuid, session_timeout)
        self.started = time.time()
        self._lock = threading.Lock()
        self._methods: Counter[str] = Counter()
        self._statuses: Counter[int] = Counter()
        self._requests = 0
        self._times: deque[float] = deque(maxlen=1000)

    def check(self, node: str) -> None:
        """``_local`` or this node's name; anything else is not a node of this cluster."""
        if node not in ("_local", self.name):
            raise Refusal(404, "not_found", f"unknown node {node!r}")

    # -- config ---------------------------------------------------------------------------------

    def get(self, section: str | None, key: str | None) -> Any:
        if section is None:
            return {s: dict(values) for s, values in self.config.items()}
        values = self.config.get(section, {})
        if key is None:
            return dict(values)
        if key not in values:
            raise Refusal(404, "not_found", "unknown_config_value")
        return values[key]

    def set(self, section: str, key: str, value: Any) -> str:
        """Set a value; the old one (``""`` when there was none) is the answer."""
        if not isinstance(value, str):
            raise bad_request("Config values must be strings (sent as JSON strings)")
        old = self.config.setdefault(section, {}).get(key, "")
        self.config[section][key] = value
        return old

    def delete(self, section: str, key: str) -> str:
        values = self.config.get(section, {})
        if key not in values:
            raise Refusal(404, "not_found", "unknown_config_value")
        old = values.pop(key)
        if not values:
            del self.config[section]
        return old

    # -- statistics -----------------------------------------------------------------------------

    def record(self, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests += 1
            self._methods[method] += 1
            self._statuses[status] += 1
            self._times.append(seconds * 1000)

    def stats(self, open_databases: int, replication: dict[str, int]) -> dict[str, Any]:
        with self._lock:
            times = list(self._times)
            methods, statuses, requests = dict(self._methods), dict(self._statuses), self._requests
        return {
            "couchdb": {
                "request_time": {"value": _histogram(times), "type": "histogram",
                                 "desc": "length of a request inside CouchDB without MochiWeb"},
                "httpd": {"requests": _counter(requests, "number of HTTP requests")},
                "httpd_request_methods": {
                    m: _counter(methods.get(m, 0), f"number of HTTP {m} requests")
                    for m in _METHODS},
                "httpd_status_codes": {
                    str(s): _counter(statuses.get(s, 0), f"number of HTTP {s} responses")
                    for s in sorted(set(_STATUSES) | set(statuses))},
                "open_databases": _counter(open_databases, "number of open databases"),
            },
            "couch_replicator": {
                "jobs": {name: {"value": value, "type": "gauge",
                                "desc": f"replicator scheduler {name} jobs"}
                         for name, value in replication.items()},
            },
        }

    def system(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        collections = sum(s["collections"] for s in gc.get_stats())
        return {
            "uptime": int(time.time() - self.started),
            "memory": {"other": rss // 4, "atom": 0, "atom_used": 0, "processes": rss // 2,
                       "processes_used": rss // 2, "binary": rss // 8, "code": rss // 8,
                       "ets": 0},
            "run_queue": 0, "ets_table_count": 0,
            "context_switches": usage.ru_nvcsw + usage.ru_nivcsw, "reductions": 0,
            "garbage_collection_count": collections, "words_reclaimed": 0,
            "io_input": usage.ru_inblock, "io_output": usage.ru_oublock,
            "os_proc_count": 0, "stale_proc_count": 0,
            "process_count": threading.active_count(), "process_limit": 262144,
            "message_queues": {}, "internal_replication_jobs": 0, "distribution": {},
            "pid": os.getpid(),
        }


def _counter(value: int, desc: str) -> dict[str, Any]:
    return {"value": value, "type": "counter", "desc": desc}


def _histogram(values: list[float]) -> dict[str, Any]:
    """CouchDB's histogram value (``couch_stats``), of ``values`` in milliseconds."""
    if not values:
        return {"min": 0, "max": 0, "arithmetic_mean": 0, "geometric_mean": 0,
                "harmonic_mean": 0, "median": 0, "variance": 0, "standard_deviation": 0,
                "skewness": 0, "kurtosis": 0, "percentile": [[p, 0] for p in
                                                             (50, 75, 90, 95, 99, 999)],
                "histogram": [[0, 0]], "n": 0}
    ordered = sorted(values)
    n = len(ordered)
    positive = [v for v in ordered if v > 0] or [1e-9]

    def percentile(p: float) -> float:
        return ordered[min(n - 1, int(math.ceil(p * n)) - 1)]

    return {
        "min": ordered[0], "max": ordered[-1], "arithmetic_mean": statistics.fmean(ordered),
        "geometric_mean": statistics.geometric_mean(positive),
        "harmonic_mean": statistics.harmonic_mean(positive), "median": statistics.median(ordered),
        "variance": statistics.pvariance(ordered), "standard_deviation": statistics.pstdev(ordered),
        "skewness": 0, "kurtosis": 0,
        "percentile": [[50, percentile(.5)], [75, percentile(.75)], [90, percentile(.9)],
                       [95, percentile(.95)], [99, percentile(.99)], [999, percentile(.999)]],
        "histogram": [[ordered[-1], n]], "n": n,
    }
