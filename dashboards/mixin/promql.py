"""PromQL building blocks: selectors filtered on the dashboard variables,
aggregations that drop job/instance/otel_scope_*, domain counters summed
across exporters, count gauges, histogram quantiles, and the recording rules
with raw fallbacks.

With one sidecar per controller replica, only the exporter whose pod holds the
controller's Lease (agentrun_exporter_leader 1) counts lifecycle events and
reports the domain gauges; a standby's counters sit at zero. After a failover
the old leader's series stop and the new leader's go on from their own values,
so each event is in exactly one exporter's series: counters and histograms are
summed across exporters (a max would drop the old leader's part of a window)."""

from __future__ import annotations


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
                window: str = "$__rate_interval", ns: bool = True) -> str:
        """Sum of a domain counter's rate/increase by `labels`, over every
        exporter: the leader's series, and across a failover or a restart the
        old and the new one's, each covering its part of the window."""
        return self.agg("sum", labels, f"{fn}({self.sel(metric, *matchers, ns=ns)}[{window}])")

    def buckets(self, metric: str, *matchers: str) -> str:
        """Observations per bucket and interval, for a heatmap: summed over
        exporters like counters."""
        return self.agg("sum", ("le",), self.increase(self.sel(metric + "_bucket", *matchers)))

    def count(self, metric: str, labels=("namespace",)) -> str:
        """A domain gauge that counts Jobs, by `labels`. One exporter reports
        it at a time; max, not sum, so that the sample the old and the new
        leader share at a failover is not counted twice."""
        return self.agg("max", labels, self.sel(metric))

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
        runs = self.counter("agentrun_runs_total", labels, window=window)
        missing = self.counter("agentrun_job_missing_total", labels, window=window)
        return f"(\n  {missing}\n  or\n  0 * {runs}\n)\n/\n{runs}"
