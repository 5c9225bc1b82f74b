//! Host names (sync-behavior.md section 1): the length-safe concatenation, the namespaced,
//! cluster-scoped and short forms, and the fixed names.

use sha2::{Digest, Sha256};

use crate::Context;

/// Kubernetes' label and DNS-label limit, applied to every generated name.
pub const MAX_NAME: usize = 63;

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The first `n` hex characters of the SHA-256 of `text`.
pub fn hash_prefix(text: &str, n: usize) -> String {
    sha256_hex(text)[..n].to_string()
}

/// Joins `parts` with `-`; past 63 bytes, keeps the first 52 bytes, appends `-` and 10 hex
/// characters of the SHA-256 of the whole joined string, then turns every `.-` into `-`.
pub fn safe_concat_name(parts: &[&str]) -> String {
    let full = parts.join("-");
    if full.len() <= MAX_NAME {
        return full;
    }
    let mut cut = 52;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{}", &full[..cut], hash_prefix(&full, 10)).replace(".-", "-")
}

/// `NAME-x-NAMESPACE-x-VC`: the host name of a namespaced virtual object (empty name: none).
pub fn host_name(context: &Context, name: &str, namespace: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    safe_concat_name(&[name, "x", namespace, "x", &context.name])
}

/// `vcluster-NAME-x-HNS-x-VC`: the host name of a cluster-scoped virtual object.
pub fn host_name_cluster(context: &Context, name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    safe_concat_name(&["vcluster", name, "x", &context.host_namespace, "x", &context.name])
}

/// `v` + 13 base-36 characters of the SHA-256 of `NAME-x-NAMESPACE-x-VC`: the short, constant
/// length form (recognized when mapping host objects back).
pub fn host_name_short(context: &Context, name: &str, namespace: &str) -> String {
    let digest = Sha256::digest([name, "x", namespace, "x", &context.name].join("-").as_bytes());
    format!("v{}", &base36(&digest)[..13])
}

/// Big-endian base-36 (`0-9a-z`), with one `0` per leading zero byte, as Go's `big.Int` text
/// plus the reference's leading-zero handling.
fn base36(bytes: &[u8]) -> String {
    let leading_zeros = bytes.iter().take_while(|b| **b == 0).count();
    let mut digits: Vec<u8> = Vec::new();
    let mut number: Vec<u8> = bytes[leading_zeros..].to_vec();
    while !number.is_empty() {
        let mut remainder = 0u32;
        let mut quotient = Vec::with_capacity(number.len());
        for byte in &number {
            let accumulator = remainder * 256 + u32::from(*byte);
            let q = (accumulator / 36) as u8;
            remainder = accumulator % 36;
            if !(quotient.is_empty() && q == 0) {
                quotient.push(q);
            }
        }
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[remainder as usize]);
        number = quotient;
    }
    let mut out = "0".repeat(leading_zeros);
    out.extend(digits.iter().rev().map(|d| *d as char));
    out
}

/// The one host config map every namespace's `kube-root-ca.crt` maps to.
pub fn kube_root_ca_host_name(context: &Context) -> String {
    safe_concat_name(&["vcluster", "kube-root-ca.crt", "x", &context.name])
}

/// The value of the `vcluster.loft.sh/managed-by` label: `VC` for namespaced host objects,
/// `HNS-x-VC` for cluster-scoped ones.
pub fn marker(context: &Context, namespaced: bool) -> String {
    if namespaced { context.name.clone() } else { safe_concat_name(&[&context.host_namespace, "x", &context.name]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc() -> Context {
        Context::new("my-vc", "vcluster-my-vc")
    }

    #[test]
    fn worked_examples() {
        assert_eq!(host_name(&vc(), "nginx", "default"), "nginx-x-default-x-my-vc");
        assert_eq!(host_name(&vc(), "kube-dns", "kube-system"), "kube-dns-x-kube-system-x-my-vc");
        assert_eq!(host_name(&vc(), "data-web-0", "default"), "data-web-0-x-default-x-my-vc");
        assert_eq!(
            host_name(&vc(), "this-is-a-really-long-statefulset-name-that-goes-on-0", "production"),
            "this-is-a-really-long-statefulset-name-that-goes-on--85d29c4cb7"
        );
        assert_eq!(host_name_cluster(&vc(), "standard"), "vcluster-standard-x-vcluster-my-vc-x-my-vc");
        assert_eq!(host_name_cluster(&vc(), "high-priority"), "vcluster-high-priority-x-vcluster-my-vc-x-my-vc");
        assert_eq!(kube_root_ca_host_name(&vc()), "vcluster-kube-root-ca.crt-x-my-vc");
        assert_eq!(marker(&vc(), false), "vcluster-my-vc-x-my-vc");
        assert_eq!(host_name(&vc(), "", "default"), "");
    }

    #[test]
    fn short_names() {
        assert_eq!(host_name_short(&vc(), "nginx", "default"), "v38rmcg6tqz0im");
        assert_eq!(host_name_short(&vc(), "nginx", "default").len(), 14);
    }

    #[test]
    fn hashing_edge_cases_at_62_63_and_64_bytes() {
        let vc = Context::new("c", "vcluster-c");
        // "NAME-x-ns-x-c" adds 9 bytes to the name.
        let exactly = |total: usize| "a".repeat(total - 9);
        let at_62 = host_name(&vc, &exactly(62), "ns");
        assert_eq!(at_62.len(), 62);
        assert!(at_62.ends_with("-x-ns-x-c"));
        let at_63 = host_name(&vc, &exactly(63), "ns");
        assert_eq!(at_63.len(), 63);
        assert!(at_63.ends_with("-x-ns-x-c"), "63 bytes are kept as they are");
        let at_64 = host_name(&vc, &exactly(64), "ns");
        assert_eq!(at_64.len(), 63);
        let full = format!("{}-x-ns-x-c", exactly(64));
        assert_eq!(at_64, format!("{}-{}", &full[..52], &hash_prefix(&full, 10)));
        // Two long names sharing their first 52 bytes still differ.
        assert_ne!(
            host_name(&vc, &format!("{}b", exactly(64)), "ns"),
            host_name(&vc, &format!("{}c", exactly(64)), "ns")
        );
    }

    #[test]
    fn a_dot_at_the_cut_is_removed() {
        // 51 characters then a dot: the cut keeps 52 bytes ending in ".", then "-hash"; ".-" becomes "-".
        let name = format!("{}.tail-that-pushes-the-name-past-sixty-three-bytes", "a".repeat(51));
        let host = host_name(&Context::new("c", "vcluster-c"), &name, "ns");
        assert_eq!(host.len(), 62);
        assert!(!host.contains(".-"));
        assert!(host.starts_with(&format!("{}-", "a".repeat(51))));
    }

    #[test]
    fn base36_keeps_leading_zero_bytes() {
        assert_eq!(base36(&[0, 0, 1]), "001");
        assert_eq!(base36(&[1, 0]), "74");
        assert_eq!(base36(&[35]), "z");
    }
}
