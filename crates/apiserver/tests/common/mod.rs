//! Starts an in-process API server on 127.0.0.1:0 with TLS and hands out kube-rs clients.

#![allow(dead_code)]

use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use vkube_apiserver::{RunningServer, ServerConfig};

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: tempfile::TempDir,
    pub kubeconfig: String,
    /// The etcd it stores in, for the suites run on etcd (`*_on_etcd` test binaries).
    pub etcd: Option<Etcd>,
}

use vkube_store::testing::Etcd;

/// Whether this test binary runs its suite on etcd (`kube_rs_on_etcd`, `bad_input_on_etcd`).
fn on_etcd() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().contains("_on_etcd")))
        .unwrap_or(false)
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        let etcd = on_etcd().then(Etcd::start);
        config.etcd = etcd.as_ref().map(|etcd| vkube_store::EtcdConfig {
            endpoints: vec![etcd.url.clone()],
            prefix: "/vkube/".into(),
            ..Default::default()
        });
        tweak(&mut config);
        // etcd answers once it has elected itself.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let server = loop {
            match vkube_apiserver::start(config.clone(), None).await {
                Ok(server) => break server,
                Err(error) if etcd.is_some() && std::time::Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("server starts: {error:?}"),
            }
        };
        let kubeconfig = server.admin_kubeconfig("test").expect("TLS is on");
        TestServer { server: Some(server), dir, kubeconfig, etcd }
    }

    pub fn url(&self) -> String {
        self.server.as_ref().unwrap().url.clone()
    }

    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::from_yaml(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
        Client::try_from(config).unwrap()
    }

    /// A raw HTTPS client that presents the admin token (for bodies kube-rs would not send).
    pub fn http(&self) -> reqwest_like::Http {
        reqwest_like::Http::new(
            &self.url(),
            self.server.as_ref().unwrap().admin_token().unwrap(),
            &self.server.as_ref().unwrap().pki.as_ref().unwrap().ca_cert,
        )
    }
}

/// Polls `check` until it returns Some, or panics after `timeout`.
pub async fn await_condition<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A minimal HTTPS client over hyper for requests with arbitrary bodies and headers.
pub mod reqwest_like {
    use std::sync::Arc;

    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    pub struct Http {
        base: String,
        token: String,
        client: Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>,
    }

    pub struct Reply {
        pub status: u16,
        pub content_type: String,
        pub body: Vec<u8>,
    }

    impl Reply {
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
        }
    }

    impl Http {
        pub fn new(base: &str, token: String, ca_pem: &str) -> Self {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let https =
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
            Http { base: base.to_string(), token, client: Client::builder(TokioExecutor::new()).build(https) }
        }

        pub async fn request(
            &self,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
            body: Vec<u8>,
            with_token: bool,
        ) -> Reply {
            let mut builder = hyper::Request::builder().method(method).uri(format!("{}{path}", self.base));
            if with_token {
                builder = builder.header("authorization", format!("Bearer {}", self.token));
            }
            for (k, v) in headers {
                builder = builder.header(*k, *v);
            }
            let response = self.client.request(builder.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
            let status = response.status().as_u16();
            let content_type =
                response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
            Reply { status, content_type, body }
        }

        pub async fn send(&self, method: &str, path: &str, content_type: &str, body: &str) -> Reply {
            self.request(method, path, &[("content-type", content_type)], body.as_bytes().to_vec(), true).await
        }

        pub async fn get(&self, path: &str) -> Reply {
            self.request("GET", path, &[], Vec::new(), true).await
        }
    }
}
