"""Ticket receivers against fake GitHub and Jira APIs on loopback: one ticket per alert key,
found again by its label, reopened and closed instead of duplicated."""

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import orjson
import pytest

from monitor.contracts.alerts import Alert
from monitor.notify.payloads import ticket_label
from monitor.notify.pipeline import Notification
from monitor.notify.sinks.registry import build_sinks
from monitor.spec.rules import load_rules_text
from monitor.telemetry.metrics import Metrics


class FakeApi:
    """Just enough of the GitHub issues and Jira REST APIs, in memory; ``fail_next`` answers 503 once."""

    def __init__(self, jira_search="cloud"):
        self.issues, self.calls, self.fail_next = [], [], 0
        self.jira_search = jira_search  # cloud: only /rest/api/3/search/jql; data-center: only /rest/api/2/search
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status, body=None):
                data = b"" if body is None else orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = orjson.loads(self.rfile.read(length)) if length else None
                api.calls.append((self.command, self.path, self.headers.get("Authorization")))
                if api.fail_next:
                    api.fail_next -= 1
                    return self._reply(503)
                status, answer = api.route(self.command, urlparse(self.path), body)
                self._reply(status, answer)

            do_GET = do_POST = do_PATCH = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, method, url, body):
        query = parse_qs(url.query)
        if url.path == "/repos/acme/ml/issues" and method == "GET":
            label = query["labels"][0]
            return 200, [i for i in self.issues if label in i["labels"]]
        if url.path == "/repos/acme/ml/issues" and method == "POST":
            issue = {"number": len(self.issues) + 1, "state": "open", "labels": body["labels"], "comments": [],
                     "title": body["title"]}
            self.issues.append(issue)
            return 201, issue
        if m := re.fullmatch(r"/repos/acme/ml/issues/(\d+)(/comments)?", url.path):
            issue = self.issues[int(m.group(1)) - 1]
            if m.group(2):
                issue["comments"].append(body["body"])
            else:
                issue["state"] = body["state"]
            return 200, issue
        if url.path == "/rest/api/2/search" and self.jira_search == "cloud":
            return 410, {"errorMessages": ["The requested API has been removed. Please migrate to /search/jql."]}
        search = "/rest/api/3/search/jql" if self.jira_search == "cloud" else "/rest/api/2/search"
        if url.path == search:
            label = re.search(r'labels = "([^"]+)"', query["jql"][0]).group(1)
            found = [self._jira_view(i) for i in self.issues if label in i["labels"]]
            return 200, {"issues": found[:1]}
        if url.path == "/rest/api/2/issue" and method == "POST":
            fields = body["fields"]
            issue = {"key": f"SEC-{len(self.issues) + 1}", "state": "open", "labels": fields["labels"], "comments": [],
                     "title": fields["summary"]}
            self.issues.append(issue)
            return 201, {"key": issue["key"]}
        if m := re.fullmatch(r"/rest/api/2/issue/SEC-(\d+)/(comment|transitions)", url.path):
            issue = self.issues[int(m.group(1)) - 1]
            if m.group(2) == "comment":
                issue["comments"].append(body["body"])
                return 201, {}
            if method == "GET":
                return 200, {"transitions": [{"id": "31", "name": "Done"}, {"id": "11", "name": "To Do"}]}
            issue["state"] = "closed" if body["transition"]["id"] == "31" else "open"
            return 204, None
        return 404, {"message": "not found"}

    @staticmethod
    def _jira_view(issue):
        category = "done" if issue["state"] == "closed" else "new"
        return {"key": issue["key"], "fields": {"status": {"statusCategory": {"key": category}}}}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def incident(fired_at, resolved_at):
    a = Alert.firing(rule="query-attack-client/page", slo="query-attack-client", severity="page", model="m",
                     client_id="key_1", sli="near_duplicate_query_rate", fired_at=fired_at, summary="probing")
    return a, a.resolve(at=resolved_at)


def run_incidents(kind, extra, jira_search="cloud"):
    api, clock = FakeApi(jira_search), type("Clock", (), {"now": 1e6, "__call__": lambda self: self.now})()
    rules = load_rules_text(f"receivers: [{{name: t, type: {kind}, url: '{api.url}', key_env: TOKEN, {extra}}}]\n"
                            "routes: [{receivers: [t]}]")
    sinks, dispatcher = build_sinks(rules, Metrics(), outbox_store={}, environ={"TOKEN": "me@acme.io:tok"},
                                    clock=clock)
    sink = {s.name: s for s in sinks}["t"]
    first, second = incident(1000.0, 2000.0), incident(5000.0, 6000.0)
    try:
        sink.send(Notification("t", "g", {}, (first[0],)))
        api.fail_next = 1  # the resolve fails once: retried from the search, not duplicated
        sink.send(Notification("t", "g", {}, (first[1],)))
        clock.now += 601
        dispatcher.drain()
        sink.send(Notification("t", "g", {}, (second[0],)))  # the same key fires again: the ticket reopens
        sink.send(Notification("t", "g", {}, (second[0],)))  # a repeated delivery changes nothing
        states = [api.issues[0]["state"]]
        sink.send(Notification("t", "g", {}, (second[1],)))
        return api, states, first[0]
    finally:
        api.close()


def test_github_issue_is_created_once_closed_reopened_and_closed_again():
    api, states, alert = run_incidents("github", "repo: acme/ml")
    assert len(api.issues) == 1 and ticket_label(alert) in api.issues[0]["labels"]
    assert states == ["open"] and api.issues[0]["state"] == "closed"
    assert len(api.issues[0]["comments"]) == 3  # resolve, refire, resolve
    assert all(auth == "Bearer me@acme.io:tok" for _, _, auth in api.calls)


@pytest.mark.parametrize("jira", ["cloud", "data-center"])
def test_jira_issue_follows_the_same_lifecycle_through_transitions(jira):
    api, states, alert = run_incidents("jira", "project: SEC", jira)
    assert len(api.issues) == 1 and api.issues[0]["key"] == "SEC-1"
    assert states == ["open"] and api.issues[0]["state"] == "closed"
    assert len(api.issues[0]["comments"]) == 3
    assert all(auth.startswith("Basic ") for _, _, auth in api.calls)
    searched = {path.split("?")[0] for method, path, _ in api.calls if "search" in path}
    assert searched == ({"/rest/api/3/search/jql"} if jira == "cloud"
                        else {"/rest/api/3/search/jql", "/rest/api/2/search"})  # data center: falls back
