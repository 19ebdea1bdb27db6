//! The telemetry catalogue (`docs/telemetry.toml`), compiled in: every metric's name, unit, labels and
//! description, and the span, attribute and event names. The instruments are built from it, so a metric's
//! name is spelled only there; the tests check that what the spans carry is in it.

use std::sync::LazyLock;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Catalogue {
    pub metric: Vec<Metric>,
    pub span: Vec<Named>,
    pub event: Vec<Named>,
    pub attribute: Vec<Attribute>,
}

#[derive(Debug, Deserialize)]
pub struct Named {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct Attribute {
    pub names: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Metric {
    /// What the code calls it (stable across renames).
    pub id: String,
    pub prometheus: String,
    pub otel: String,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub unit: String,
    pub labels: Vec<String>,
}

static CATALOGUE: LazyLock<Catalogue> = LazyLock::new(|| {
    toml::from_str(include_str!("../docs/telemetry.toml")).expect("docs/telemetry.toml parses (tested)")
});

pub fn catalogue() -> &'static Catalogue {
    &CATALOGUE
}

/// The metric of that id. Every id the code uses is exercised by the metric tests.
pub fn metric(id: &str) -> &'static Metric {
    CATALOGUE
        .metric
        .iter()
        .find(|m| m.id == id)
        .unwrap_or_else(|| panic!("no metric {id:?} in docs/telemetry.toml"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_catalogue_parses_and_its_names_are_unique_and_consistent() {
        let c = catalogue();
        assert!(c.metric.len() > 20);
        let mut seen = HashSet::new();
        for m in &c.metric {
            assert!(
                seen.insert(&m.id) && seen.insert(&m.prometheus) && seen.insert(&m.otel),
                "{} twice",
                m.id
            );
            // The OpenTelemetry → Prometheus naming rules: dots to `_`, a unit suffix, `_total` on counters.
            let base = m.otel.replace('.', "_");
            assert!(m.prometheus.starts_with(&base), "{}: {} vs {}", m.id, m.prometheus, m.otel);
            assert_eq!(m.kind == "counter", m.prometheus.ends_with("_total"), "{}", m.id);
            assert!(!m.description.is_empty(), "{}", m.id);
        }
    }
}
