"""Ticket receivers over HTTP: GitHub issues and Jira, searched by the alert key's label first, so a
retried or repeated delivery updates the one ticket instead of opening another.

firing: no ticket with the label -> create it; an open one -> comment; a closed one -> reopen and
comment. resolved: comment and close. Each step is idempotent enough to retry from the start.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import quote

import orjson

from monitor.notify.outbox import Delivery, Outcome


class _Failed(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def _call(method: str, url: str, headers: dict, body: dict | None, timeout_s: float):
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        raise _Failed(exc.code) from None
    return json.loads(payload) if payload.strip() else None


def send_ticket(delivery: Delivery, timeout_s: float) -> Outcome:
    spec = orjson.loads(delivery.body)
    flow = _github if spec["kind"] == "github" else _jira
    try:
        flow(delivery.url.rstrip("/"), delivery.headers, spec, timeout_s)
    except _Failed as exc:
        return Outcome.of_status(exc.status)
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        return Outcome.retry(f"network error: {type(getattr(exc, 'reason', exc)).__name__}")
    except (ValueError, KeyError, TypeError) as exc:
        return Outcome.give_up(f"unexpected answer from the ticket system: {type(exc).__name__}")
    return Outcome.sent()


def _github(api: str, headers: dict, spec: dict, timeout_s: float) -> None:
    repo = f"{api}/repos/{spec['repo']}/issues"
    found = _call("GET", f"{repo}?labels={quote(spec['label'])}&state=all&per_page=5", headers, None, timeout_s)
    issue = found[0] if found else None
    if spec["status"] == "firing":
        if issue is None:
            _call("POST", repo, headers, {"title": spec["title"], "body": spec["text"],
                                          "labels": [spec["label"], "advmon", spec["severity"]]}, timeout_s)
            return
        if issue["state"] == "closed":
            _call("PATCH", f"{repo}/{issue['number']}", headers, {"state": "open"}, timeout_s)
        _call("POST", f"{repo}/{issue['number']}/comments", headers, {"body": spec["text"]}, timeout_s)
    elif issue is not None:
        _call("POST", f"{repo}/{issue['number']}/comments", headers, {"body": spec["text"]}, timeout_s)
        if issue["state"] != "closed":
            _call("PATCH", f"{repo}/{issue['number']}", headers, {"state": "closed"}, timeout_s)


def _jira(base: str, headers: dict, spec: dict, timeout_s: float) -> None:
    jql = f'project = "{spec["project"]}" AND labels = "{spec["label"]}" ORDER BY created DESC'
    found = _jira_search(base, headers, f"jql={quote(jql)}&maxResults=1&fields=status", timeout_s)
    issue = found["issues"][0] if found.get("issues") else None
    if spec["status"] == "firing":
        if issue is None:
            _call("POST", f"{base}/rest/api/2/issue", headers, {"fields": {
                "project": {"key": spec["project"]}, "summary": spec["title"], "description": spec["text"],
                "issuetype": {"name": spec["issue_type"]}, "labels": [spec["label"], "advmon"]}}, timeout_s)
            return
        if issue["fields"]["status"]["statusCategory"]["key"] == "done":
            _transition(base, headers, issue["key"], spec["reopen_transition"], timeout_s)
        _call("POST", f"{base}/rest/api/2/issue/{issue['key']}/comment", headers, {"body": spec["text"]}, timeout_s)
    elif issue is not None:
        _call("POST", f"{base}/rest/api/2/issue/{issue['key']}/comment", headers, {"body": spec["text"]}, timeout_s)
        if issue["fields"]["status"]["statusCategory"]["key"] != "done":
            _transition(base, headers, issue["key"], spec["resolve_transition"], timeout_s)


def _jira_search(base: str, headers: dict, query: str, timeout_s: float) -> dict:
    """Jira Cloud's search (``/rest/api/3/search/jql``; Cloud answers 410 on the old one); Jira Data Center
    and Server have only ``/rest/api/2/search``, so a 404 or 405 from the first falls back to it."""
    try:
        return _call("GET", f"{base}/rest/api/3/search/jql?{query}", headers, None, timeout_s)
    except _Failed as exc:
        if exc.status not in (404, 405):
            raise
    return _call("GET", f"{base}/rest/api/2/search?{query}", headers, None, timeout_s)


def _transition(base: str, headers: dict, key: str, name: str, timeout_s: float) -> None:
    available = _call("GET", f"{base}/rest/api/2/issue/{key}/transitions", headers, None, timeout_s)["transitions"]
    match = next((t for t in available if t["name"].lower() == name.lower()), None)
    if match is None:
        raise ValueError(f"no transition named {name!r}")
    _call("POST", f"{base}/rest/api/2/issue/{key}/transitions", headers, {"transition": {"id": match["id"]}}, timeout_s)
