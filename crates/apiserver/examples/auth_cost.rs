//! Measures what authentication and authorization add to a request, in-process: a
//! service-account token check (first and remembered), and RBAC decisions against upstream's
//! bootstrap policy plus 1,000 namespaces each with a RoleBinding.
//! `cargo run --release -p vkube-apiserver --example auth_cost`

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use vkube_apiserver::auth::{Attributes, Identity, Rbac, decide};
use vkube_apiserver::catalog::Catalog;
use vkube_apiserver::registry::Registry;
use vkube_apiserver::tokens::TokenSigner;
use vkube_store::{MemoryStorage, Storage};

fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e9 / f64::from(n)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let registry = Registry::new(store.clone(), Catalog::builtin());
    registry.bootstrap().await.unwrap();
    let snapshot = registry.catalog.snapshot();
    let bindings = snapshot.get("rbac.authorization.k8s.io", "v1", "rolebindings").unwrap();
    for i in 0..1000 {
        let binding = json!({
            "metadata": {"name": "edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": "bench", "namespace": format!("ns-{i}")}],
        });
        // Namespaces need not exist for the index; create the bindings straight in the store.
        let key = bindings.key(Some(&format!("ns-{i}")), "edit");
        store.create(&key, serde_json::to_vec(&binding).unwrap().into()).await.unwrap();
    }
    let rbac = Rbac::start(store.clone()).await.unwrap();
    let account = Identity::new(
        "system:serviceaccount:ns-500:bench",
        vec!["system:serviceaccounts".into(), "system:serviceaccounts:ns-500".into(), "system:authenticated".into()],
    );
    let admin = Identity::new("admin", vec!["system:masters".into(), "system:authenticated".into()]);
    let create = Attributes::resource("create", "", "secrets", "", "ns-500", "");
    let refused = Attributes::resource("list", "", "secrets", "", "ns-501", "");
    let n = 200_000;
    assert!(decide(&rbac, &account, &create).allowed);
    assert!(!decide(&rbac, &account, &refused).allowed);
    println!(
        "RBAC allow (service account, RoleBinding to edit): {:.0} ns",
        per_call(n, || {
            std::hint::black_box(decide(&rbac, &account, &create));
        })
    );
    println!(
        "RBAC refuse (no binding in that namespace): {:.0} ns",
        per_call(n, || {
            std::hint::black_box(decide(&rbac, &account, &refused));
        })
    );
    println!(
        "system:masters: {:.0} ns",
        per_call(n, || {
            std::hint::black_box(decide(&rbac, &admin, &create));
        })
    );
    println!(
        "attributes from a request: {:.0} ns",
        per_call(n, || {
            std::hint::black_box(Attributes::from_request(
                "POST",
                "/api/v1/namespaces/ns-500/secrets",
                Some("fieldManager=x"),
            ));
        })
    );
    let key = rcgen::KeyPair::generate().unwrap();
    let signer = TokenSigner::from_pkcs8(&key.serialize_der()).unwrap();
    let (token, _) = signer.issue("ns-500", "bench", "uid", &json!({})).unwrap();
    let fresh: Vec<String> = (0..2000).map(|_| signer.issue("ns-500", "bench", "uid", &json!({})).unwrap().0).collect();
    let mut next = fresh.iter();
    println!(
        "token signature check (first use): {:.0} ns",
        per_call(2000, || {
            std::hint::black_box(signer.verify(next.next().unwrap()));
        })
    );
    signer.verify(&token);
    println!(
        "token check (remembered): {:.0} ns",
        per_call(n, || {
            std::hint::black_box(signer.verify(&token));
        })
    );
}
