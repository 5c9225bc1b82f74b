//! A throwaway etcd for test harnesses and benchmarks: the binary `tools/k8s/build.sh` builds
//! (etcd 3.5, cached outside the repository), on free loopback ports, with its data in a fresh
//! temporary folder; killed and removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// PEM files of an etcd serving TLS: its CA (which also signs the clients), its certificate and
/// key (for 127.0.0.1).
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running etcd.
pub struct Etcd {
    child: Child,
    dir: PathBuf,
    /// Its client URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The folder its binaries (`etcd`, `etcdctl`, ...) are in.
    pub bin: PathBuf,
    /// What it was started with (for [`Etcd::restart`]).
    args: Vec<std::ffi::OsString>,
    client: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

impl Etcd {
    /// Builds etcd if needed (`tools/k8s/build.sh` prints its bin folder), starts it without
    /// fsync (tests need no durability from it), and waits until it accepts connections.
    ///
    /// # Panics
    /// When etcd cannot be built or does not listen within 60 s: a harness cannot go on.
    pub fn start() -> Etcd {
        Self::start_with(false)
    }

    /// [`Etcd::start`], syncing every write to disk when `fsync` (as in production; benchmarks).
    ///
    /// # Panics
    /// As [`Etcd::start`].
    pub fn start_with(fsync: bool) -> Etcd {
        Self::launch(fsync, None)
    }

    /// [`Etcd::start`] serving HTTPS with `tls`'s certificate and accepting only clients with a
    /// certificate of its CA (`--client-cert-auth`).
    ///
    /// # Panics
    /// As [`Etcd::start`].
    pub fn start_tls(tls: &Tls) -> Etcd {
        Self::launch(false, Some(tls))
    }

    fn launch(fsync: bool, tls: Option<&Tls>) -> Etcd {
        let build = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/k8s/build.sh");
        let out = Command::new(build).output().expect("tools/k8s/build.sh runs");
        assert!(out.status.success(), "building etcd: {}", String::from_utf8_lossy(&out.stderr));
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vkube-etcd-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (client, peer) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut command = Command::new(bin.join("etcd"));
        let child = command
            .args(["--data-dir", &dir.join("data").to_string_lossy()])
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}"), "--log-level", "error"])
            .args(if fsync { &[][..] } else { &["--unsafe-no-fsync"][..] })
            .args(
                tls.map(|tls| {
                    let path = |p: &PathBuf| p.to_string_lossy().to_string();
                    vec![
                        "--cert-file".to_string(),
                        path(&tls.cert),
                        "--key-file".into(),
                        path(&tls.key),
                        "--trusted-ca-file".into(),
                        path(&tls.ca),
                        "--client-cert-auth".into(),
                    ]
                })
                .unwrap_or_default(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        let args = command.get_args().map(ToOwned::to_owned).collect();
        let etcd = Etcd { child, dir, url, bin, args, client };
        etcd.wait_listening();
        etcd
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.client)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not listen in 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills etcd (`kill -9`) and starts it again on the same data and ports.
    ///
    /// # Panics
    /// When it does not start or listen again within 60 s.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Command::new(self.bin.join("etcd"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts again");
        self.wait_listening();
    }

    /// A store on it under `prefix`, once etcd has elected itself (until then requests fail).
    ///
    /// # Panics
    /// When etcd does not answer within 60 s.
    pub async fn store(&self, prefix: &str) -> crate::EtcdStorage {
        let config =
            crate::EtcdConfig { endpoints: vec![self.url.clone()], prefix: prefix.into(), ..Default::default() };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match crate::EtcdStorage::connect(config.clone()).await {
                Ok(store) => return store,
                Err(error) => assert!(Instant::now() < deadline, "etcd not ready: {error}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
