//! The kube-rs suite (kube_rs.rs) again, with the API server on etcd instead of SQLite
//! (common/mod.rs starts an etcd per test server when the binary's name says `_on_etcd`).

include!("kube_rs.rs");
