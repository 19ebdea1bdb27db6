//! Deterministic trace and span ids, so the same lifecycle always yields the same ids, across restarts and
//! between a live run and a replay of it.

const FNV64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV128_OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
const FNV128_PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

fn fnv64(parts: &[&str]) -> u64 {
    let mut h = FNV64_OFFSET;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= u64::from(b'/');
            h = h.wrapping_mul(FNV64_PRIME);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV64_PRIME);
        }
    }
    h
}

fn fnv128(s: &str) -> u128 {
    let mut h = FNV128_OFFSET;
    for b in s.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(FNV128_PRIME);
    }
    h
}

/// A 64-bit key for a name the tracker only needs to match, not print (a run's Job names).
pub fn name_key(name: &str) -> u64 {
    fnv64(&[name])
}

/// The trace of an AgentRun: FNV-1a 128 of `agentrun-trace/<uid>`. Never zero (zero ids are invalid).
pub fn trace_id(run_uid: &str) -> u128 {
    fnv128(&format!("agentrun-trace/{run_uid}")).max(1)
}

/// A span: FNV-1a 64 of `<object uid>/<span name>[/<qualifiers>]`. Never zero.
pub fn span_id(object_uid: &str, span_name: &str, qualifiers: &[&str]) -> u64 {
    let mut parts = Vec::with_capacity(2 + qualifiers.len());
    parts.push(object_uid);
    parts.push(span_name);
    parts.extend_from_slice(qualifiers);
    fnv64(&parts).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = span_id("uid-1", "job.run", &[]);
        assert_eq!(a, span_id("uid-1", "job.run", &[]));
        assert_ne!(a, span_id("uid-1", "job.pending", &[]));
        assert_ne!(span_id("uid-1", "workflow.step", &["1"]), span_id("uid-1", "workflow.step", &["2"]));
        assert_eq!(trace_id("x"), trace_id("x"));
        assert_ne!(trace_id("x"), trace_id("y"));
    }

    #[test]
    fn known_fnv_vectors() {
        // Published FNV-1a test vectors.
        assert_eq!(fnv64(&["a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv128("a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
    }
}
