"""Queries against the traces data source (Tempo TraceQL or Jaeger) and
Grafana Explore links to them."""

from __future__ import annotations

import json
import re
import urllib.parse


class Traces:
    """Queries against the traces data source (Tempo TraceQL or Jaeger)."""

    def __init__(self, cfg: dict):
        self.backend = cfg["traces_backend"]
        if self.backend not in ("tempo", "jaeger"):
            raise SystemExit(f"traces_backend must be tempo or jaeger, not {self.backend!r}")
        self.ds = {"type": self.backend, "uid": "${traces_datasource}"}

    @staticmethod
    def traceql(span: str | None, ns: str, conds: list[str]) -> str:
        parts = ['resource.service.name = "${trace_service}"']
        if ns:
            parts.append(ns)
        if span:
            parts.append(f'name = "{span}"')
        parts.extend(conds)
        return "{ " + " && ".join(parts) + " }"

    def query(self, span: str | None, ns: str, conds: list[str], jaeger_tags: dict, ref="A", limit=20) -> dict:
        """`ns` is a TraceQL namespace condition; Jaeger gets `jaeger_tags`
        (equality only) instead of `ns` and `conds`."""
        if self.backend == "tempo":
            return {
                "datasource": self.ds,
                "refId": ref,
                "queryType": "traceql",
                "query": self.traceql(span, ns, conds),
                "limit": limit,
                "tableType": "traces",
            }
        q = {
            "datasource": self.ds,
            "refId": ref,
            "queryType": "search",
            "service": "${trace_service}",
            "limit": limit,
        }
        if span:
            q["operation"] = span
        if jaeger_tags:
            q["tags"] = " ".join(f"{k}={v}" for k, v in jaeger_tags.items())
        return q

    def explore_url(self, query: dict) -> str:
        """A Grafana Explore URL (panes format, Grafana >= 10.2) that runs
        `query` on the traces data source over the dashboard's time range.

        The literal parts are percent-encoded here; `${...}` references are
        left for Grafana, which URI-encodes their values in data links."""
        pane = {
            "agentrun": {
                "datasource": "${traces_datasource}",
                "queries": [query],
                "range": {"from": "${__from}", "to": "${__to}"},
            }
        }
        raw = json.dumps(pane, separators=(",", ":"))
        out = []
        for part in re.split(r"(\$\{[^}]+\})", raw):
            out.append(part if part.startswith("${") else urllib.parse.quote(part, safe=""))
        return "/explore?schemaVersion=1&orgId=1&panes=" + "".join(out)

    def link(self, title: str, span, ns: str, conds, jaeger_tags) -> dict:
        return {
            "title": title,
            "url": self.explore_url(self.query(span, ns, conds, jaeger_tags)),
            "targetBlank": True,
        }

    # namespace conditions
    FIELD_NS = 'span.k8s.namespace.name = "${__field.labels.namespace}"'
    VAR_NS = 'span.k8s.namespace.name =~ "${namespace:regex}"'

    def ns_link(self, title: str, span, conds, tags) -> dict:
        """A data link to the spans of the clicked series' namespace."""
        return self.link(title, span, self.FIELD_NS, conds,
                         {"k8s.namespace.name": "${__field.labels.namespace}", **tags})

    # Jobs deleted before collection: the job.ttl span flags it; a Job deleted
    # before it finished has no job.ttl span, only a job.run span with outcome
    # `deleted`.
    DELETED_CONDS = ('((name = "job.ttl" && span.agentrun.job.deleted_before_collection = true) || '
                     '(name = "job.run" && span.agentrun.job.outcome = "deleted"))',)

    def deleted_link(self, ns: str, field: bool) -> dict:
        """Traces of Jobs deleted before collection; `field`: of the clicked
        series' namespace and runtime."""
        conds = list(self.DELETED_CONDS)
        tags = {"agentrun.job.deleted_before_collection": "true"}
        if field:
            conds.append('span.agentrun.runtime = "${__field.labels.runtime}"')
            tags = {"k8s.namespace.name": "${__field.labels.namespace}", **tags}
            title = "Jobs deleted before collection in ${__field.labels.namespace} (${__field.labels.runtime})"
        else:
            title = "Jobs deleted before collection"
        # Jaeger cannot OR two operations: it searches the job.ttl spans.
        return self.link(title, None if self.backend == "tempo" else "job.ttl", ns, conds, tags)
