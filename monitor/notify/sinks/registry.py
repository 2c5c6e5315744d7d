"""Build the sinks the rules' receivers name, with secrets from the environment.

>>> from monitor.spec.rules import load_rules_text
>>> rules = load_rules_text("receivers: [{name: pager, type: pagerduty, key_env: PD_KEY}]\\n"
...                         "routes: [{receivers: [pager]}]")
>>> try:
...     build_sinks(rules, Metrics(), outbox_store={}, environ={})
... except ValueError as exc:
...     print(exc)
receiver pager: environment variable PD_KEY is not set
>>> sinks, dispatcher = build_sinks(rules, Metrics(), outbox_store={}, environ={"PD_KEY": "k"})
>>> sorted(s.name for s in sinks)
['pager', 'stdout']
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from monitor.errors import ConfigError
from monitor.notify.outbox import Outbox
from monitor.notify.payloads import Secrets
from monitor.notify.sinks import Sink
from monitor.notify.sinks.console import ConsoleSink
from monitor.notify.sinks.http import Dispatcher, HttpSink
from monitor.spec.rules import Receiver, Rules
from monitor.telemetry.metrics import Metrics


def receiver_secrets(receiver: Receiver, environ: Mapping[str, str]) -> Secrets:
    def read(variable: str | None) -> str | None:
        if variable is None:
            return None
        value = environ.get(variable, "")
        if not value:
            raise ConfigError(f"receiver {receiver.name}: environment variable {variable} is not set")
        return value

    return Secrets(key=read(receiver.key_env), url=read(receiver.url_env), hmac_secret=read(receiver.hmac_secret_env))


def build_sinks(rules: Rules, metrics: Metrics, outbox_store: MutableMapping,
                environ: Mapping[str, str] | None = None, **dispatcher_options) -> tuple[list[Sink], Dispatcher]:
    environ = os.environ if environ is None else environ
    dispatcher = Dispatcher(Outbox(outbox_store), metrics, {r.name: float(r.timeout) for r in rules.receivers},
                            **dispatcher_options)
    sinks: list[Sink] = [ConsoleSink()]
    sinks += [HttpSink(r, receiver_secrets(r, environ), dispatcher) for r in rules.receivers]
    return sinks, dispatcher
