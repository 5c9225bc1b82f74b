//! The bad-input suite (bad_input.rs) again, with the API server on etcd: a failed request
//! changes nothing there either.

include!("bad_input.rs");
