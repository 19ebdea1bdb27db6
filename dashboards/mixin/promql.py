"""PromQL building blocks: selectors filtered on the dashboard variables,
aggregations that drop job/instance/otel_scope_*, de-duplicated domain
counters, histogram quantiles, and the recording rules with raw fallbacks."""

from __future__ import annotations

import tomllib
from pathlib import Path

# Labels of the domain counters and histograms, from the telemetry catalogue (docs/telemetry.toml); check.py
# verifies that the de-duplicating `max by` keeps all of them.
_CATALOGUE = tomllib.loads((Path(__file__).resolve().parents[2] / "docs" / "telemetry.toml").read_text())
_DOMAIN = [m for m in _CATALOGUE["metric"] if m["group"] == "domain"]
COUNTER_LABELS = {m["prometheus"]: tuple(m["labels"]) for m in _DOMAIN if m["type"] == "counter"}
HISTOGRAM_LABELS = {m["prometheus"]: tuple(m["labels"]) for m in _DOMAIN if m["type"] == "histogram"}


class Q:
    """PromQL building blocks bound to one CONFIG."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.cl = cfg["cluster_label"]
        self.multi = cfg["show_multi_cluster"]

    def sel(self, metric: str, *matchers: str, ns: bool = True) -> str:
        """A selector filtered on the cluster and namespace variables.

        `cluster=~".*"` (the All value) also matches series that have no
        cluster label at all, so single-cluster installs keep working."""
        m = [f'{self.cl}=~"$cluster"']
        if ns:
            m.append('namespace=~"$namespace"')
        m.extend(matchers)
        return f"{metric}{{{', '.join(m)}}}"

    def by(self, *labels: str) -> str:
        ls = ([self.cl] if self.multi else []) + list(labels)
        return f"by ({', '.join(ls)})" if ls else ""

    def agg(self, op: str, labels, inner: str) -> str:
        b = self.by(*labels)
        return f"{op} {b} ({inner})" if b else f"{op}({inner})"

    def legend(self, text: str) -> str:
        return (f"{{{{{self.cl}}}}} " + text) if self.multi else text

    def rate(self, sel: str, window: str = "$__rate_interval") -> str:
        return f"rate({sel}[{window}])"

    def increase(self, sel: str, window: str = "$__rate_interval") -> str:
        return f"increase({sel}[{window}])"

    def counter(self, metric: str, labels=(), *matchers: str, fn: str = "increase",
                window: str = "$__rate_interval", ns: bool = True, dedupe: bool = True) -> str:
        """Sum of a domain counter's rate/increase by `labels`, de-duplicated
        first: with one exporter per controller replica every exporter counts
        the same events, so series that differ only in job/instance/otel_scope_*
        are combined with max over the counter's full label set, then summed.

        dedupe=False is for ratios, where the replicas cancel out: plain sums
        are then also right across an exporter restart (old and new pod's
        series each cover part of the window), which max is not."""
        rated = f"{fn}({self.sel(metric, *matchers, ns=ns)}[{window}])"
        if not dedupe:
            return self.agg("sum", labels, rated)
        full = ", ".join([self.cl, *COUNTER_LABELS[metric]])
        return self.agg("sum", labels, f"max by ({full}) ({rated})")

    def buckets(self, metric: str, *matchers: str) -> str:
        """Observations per bucket and interval, for a heatmap: de-duplicated
        across exporters like counters (quantiles need no de-duplication, as
        every exporter sees the same distribution)."""
        full = ", ".join([self.cl, *HISTOGRAM_LABELS[metric], "le"])
        inner = f"max by ({full}) (increase({self.sel(metric + '_bucket', *matchers)}[$__rate_interval]))"
        return self.agg("sum", ("le",), inner)

    def hq(self, q: float, metric: str, labels=(), *matchers: str, window: str = "$__rate_interval") -> str:
        inner = self.agg("sum", ("le", *labels), self.rate(self.sel(f"{metric}_bucket", *matchers), window))
        return f"histogram_quantile({q}, {inner})"

    # -- recording rules with raw fallbacks --------------------------------

    def ttl_recommended(self, labels=("namespace",), window: str = "$__range") -> str:
        """Recommended minimum Job TTL: the recording rule where it exists,
        else the same formula from the raw histogram over the dashboard range."""
        rt = self.cfg["ttl_recommended"]
        rule = self.agg("max", labels, self.sel(self.cfg["rules"]["ttl_recommended_min"]))
        raw = (
            "clamp_min(\n  "
            + self.hq(rt["quantile"], "agentrun_job_collection_delay_seconds", labels, window=window)
            + f"\n  * {rt['factor']},\n  {rt['min_seconds']}\n) >= 0"
        )
        return f"{rule}\nor\n{raw}"

    def missing_ratio_raw(self, labels=("namespace",), window: str = "$__rate_interval") -> str:
        """Missing-Job error ratio from raw counters. A namespace with runs but
        no missing-Job series yet counts as 0, not as "no data"."""
        runs = self.counter("agentrun_runs_total", labels, window=window, dedupe=False)
        missing = self.counter("agentrun_job_missing_total", labels, window=window, dedupe=False)
        return f"(\n  {missing}\n  or\n  0 * {runs}\n)\n/\n{runs}"
