"""What the API server itself counts: requests by verb and open watches for one resource, read from its
``/metrics`` endpoint (Prometheus text). The server's view, so a test or bench of our watches does not
take the client's word for it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class ResourceRequests:
    """Requests the API server counted for one resource: by verb (LIST, WATCH, GET, ...) and open watches."""

    by_verb: dict[str, float]
    open_watches: float

    def __sub__(self, before: ResourceRequests) -> ResourceRequests:
        verbs = set(self.by_verb) | set(before.by_verb)
        return ResourceRequests(
            {verb: self.by_verb.get(verb, 0.0) - before.by_verb.get(verb, 0.0) for verb in verbs},
            self.open_watches - before.open_watches,
        )

    def count(self, verb: str) -> int:
        """Requests of ``verb`` that have ended (a watch is counted when it closes)."""
        return int(self.by_verb.get(verb, 0.0))

    @property
    def watches_opened(self) -> int:
        """Watches that ended plus those still open (as a difference: opened between two readings)."""
        return int(self.by_verb.get("WATCH", 0.0) + self.open_watches)


def scrape(api_client: k8s.ApiClient) -> str:
    """The raw ``/metrics`` text (needs a user allowed ``get`` on the ``/metrics`` non-resource URL)."""
    caller: Any = api_client  # call_api is untyped in the stubs
    configuration = caller.configuration
    headers = {"Accept": "text/plain"}
    for setting in configuration.auth_settings().values():
        if setting.get("in") == "header" and setting.get("value"):
            headers[setting["key"]] = setting["value"]
    response = caller.call_api("GET", f"{configuration.host}/metrics", header_params=headers, _request_timeout=(10, 30))
    response.read()
    if response.status != 200:
        raise RuntimeError(f"GET /metrics: HTTP {response.status}")
    return str(response.data.decode("utf-8", "replace"))


def resource_requests(api_client: k8s.ApiClient, group: str, resource: str) -> ResourceRequests:
    by_verb: dict[str, float] = {}
    open_watches = 0.0
    for line in scrape(api_client).splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name = match["name"]
        if name not in ("apiserver_request_total", "apiserver_longrunning_requests"):
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        if labels.get("group", "") != group or labels.get("resource") != resource or labels.get("subresource"):
            continue
        value = float(match["value"])
        if name == "apiserver_request_total":
            verb = labels.get("verb", "")
            by_verb[verb] = by_verb.get(verb, 0.0) + value
        elif labels.get("verb") == "WATCH":
            open_watches += value
    return ResourceRequests(by_verb, open_watches)
