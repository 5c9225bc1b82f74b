//! `exec` into a simulated container: the command runs as a local process in a per-pod sandbox
//! folder. It is not a container: there is no image, no isolation, no root filesystem of its own.
//! What a container would see of its pod is written into the sandbox: every mounted volume
//! (config maps, secrets, downward API, projected sources, emptyDir) as files under
//! `<sandbox>/volumes/<volume>`, and the container's environment (literal values, config map and
//! secret keys, `envFrom`, downward-API fields). Arguments and the working directory that name a
//! mount path are rewritten to the sandbox folder, so `cat /etc/config/a` reads the mounted key.
//!
//! Frames are the channel protocol's: the first byte names the stream (0 stdin, 1 stdout,
//! 2 stderr, 3 error, 4 resize, 255 close).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Why a command cannot run.
#[derive(Debug, PartialEq)]
pub struct ExecError(pub String);

/// A prepared sandbox for one container of one pod.
#[derive(Debug)]
pub struct Sandbox {
    /// The pod's sandbox folder.
    pub root: PathBuf,
    /// The container's environment.
    pub env: BTreeMap<String, String>,
    /// Mount path → folder or file in the sandbox, longest first.
    pub mounts: Vec<(String, PathBuf)>,
    /// The working directory.
    pub working_dir: PathBuf,
}

fn field<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// A downward-API field of `pod` (`metadata.name`, `metadata.labels['k']`, `status.podIP` ...).
fn downward(pod: &Value, path: &str) -> Option<String> {
    let map_entry = |map: &str, rest: &str| -> Option<String> {
        let key = rest.strip_prefix("['")?.strip_suffix("']")?;
        pod.pointer(&format!("/metadata/{map}"))?.get(key)?.as_str().map(String::from)
    };
    let whole_map = |map: &str| -> String {
        let mut lines: Vec<String> = pod
            .pointer(&format!("/metadata/{map}"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", Value::String(v.as_str().unwrap_or_default().into())))
            .collect();
        lines.sort();
        lines.join("\n")
    };
    match path {
        "metadata.name" => Some(field(pod, "/metadata/name").into()),
        "metadata.namespace" => Some(field(pod, "/metadata/namespace").into()),
        "metadata.uid" => Some(field(pod, "/metadata/uid").into()),
        "metadata.labels" => Some(whole_map("labels")),
        "metadata.annotations" => Some(whole_map("annotations")),
        "spec.nodeName" => Some(field(pod, "/spec/nodeName").into()),
        "spec.serviceAccountName" => Some(field(pod, "/spec/serviceAccountName").into()),
        "status.podIP" => Some(field(pod, "/status/podIP").into()),
        "status.hostIP" => Some(field(pod, "/status/hostIP").into()),
        _ => {
            if let Some(rest) = path.strip_prefix("metadata.labels") {
                return map_entry("labels", rest);
            }
            map_entry("annotations", path.strip_prefix("metadata.annotations")?)
        }
    }
}

/// Reads config maps and secrets of the pod's namespace once each.
struct Sources {
    client: Client,
    namespace: String,
    maps: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    secrets: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

impl Sources {
    async fn data(&mut self, secret: bool, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let cache = if secret { &mut self.secrets } else { &mut self.maps };
        if let Some(found) = cache.get(name) {
            return found.clone();
        }
        let found = if secret {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            api.get_opt(name).await.ok().flatten().map(|s| {
                let mut data: BTreeMap<String, Vec<u8>> =
                    s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                for (k, v) in s.string_data.unwrap_or_default() {
                    data.insert(k, v.into_bytes());
                }
                data
            })
        } else {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            api.get_opt(name).await.ok().flatten().map(|c| {
                let mut data: BTreeMap<String, Vec<u8>> =
                    c.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                for (k, v) in c.binary_data.unwrap_or_default() {
                    data.insert(k, v.0);
                }
                data
            })
        };
        cache.insert(name.to_string(), found.clone());
        found
    }
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), ExecError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ExecError(format!("preparing {}: {e}", parent.display())))?;
    }
    std::fs::write(path, data).map_err(|e| ExecError(format!("writing {}: {e}", path.display())))
}

/// Writes `data` (key → bytes) into `dir`, as `items` select and rename them (all keys without).
fn write_keys(dir: &Path, data: &BTreeMap<String, Vec<u8>>, items: Option<&Value>) -> Result<(), ExecError> {
    match items.and_then(Value::as_array) {
        Some(items) => {
            for item in items {
                if let Some(bytes) = data.get(field(item, "/key")) {
                    write_file(&dir.join(field(item, "/path")), bytes)?;
                }
            }
        }
        None => {
            for (key, bytes) in data {
                write_file(&dir.join(key), bytes)?;
            }
        }
    }
    Ok(())
}

/// The contents of the file at `path` in `container` of `pod` when a config map or secret
/// volume provides it (a server's certificate, read as the container would read it).
pub async fn mounted_file(client: Client, pod: &Value, container: &Value, path: &str) -> Option<Vec<u8>> {
    let mount = container
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|m| path.starts_with(&format!("{}/", field(m, "/mountPath").trim_end_matches('/'))))
        .max_by_key(|m| field(m, "/mountPath").len())?;
    let relative = path[field(mount, "/mountPath").trim_end_matches('/').len() + 1..].to_string();
    let volume = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| field(v, "/name") == field(mount, "/name"))?;
    let source = volume.get("secret").or_else(|| volume.get("configMap"))?;
    let secret = volume.get("secret").is_some();
    let name = if secret { field(source, "/secretName") } else { field(source, "/name") };
    let namespace = field(pod, "/metadata/namespace").to_string();
    let mut sources = Sources { client, namespace, maps: BTreeMap::new(), secrets: BTreeMap::new() };
    let mut data = sources.data(secret, name).await?;
    let key = match source.get("items").and_then(Value::as_array) {
        Some(items) => field(items.iter().find(|i| field(i, "/path") == relative)?, "/key").to_string(),
        None => relative,
    };
    data.remove(&key)
}

impl Sandbox {
    /// Prepares the sandbox of `container` of `pod` under `base`, reading the pod's config maps
    /// and secrets through `client`.
    pub async fn prepare(client: Client, base: &Path, pod: &Value, container: &str) -> Result<Sandbox, ExecError> {
        let namespace = field(pod, "/metadata/namespace").to_string();
        let uid = field(pod, "/metadata/uid");
        let id = if uid.is_empty() { field(pod, "/metadata/name") } else { uid };
        let root = base.join(&namespace).join(id);
        std::fs::create_dir_all(&root).map_err(|e| ExecError(format!("preparing {}: {e}", root.display())))?;
        let spec = pod.get("spec").cloned().unwrap_or_default();
        let all: Vec<&Value> = ["initContainers", "containers", "ephemeralContainers"]
            .iter()
            .flat_map(|key| spec.get(*key).and_then(Value::as_array).into_iter().flatten())
            .collect();
        let definition = all
            .into_iter()
            .find(|c| field(c, "/name") == container)
            .ok_or_else(|| ExecError(format!("container not found (\"{container}\")")))?
            .clone();
        let mut sources = Sources { client, namespace, maps: BTreeMap::new(), secrets: BTreeMap::new() };

        // Volumes, rewritten on every exec so they show the current data.
        let volumes: BTreeMap<String, Value> = spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|v| (field(v, "/name").to_string(), v.clone()))
            .collect();
        let mut mounts = Vec::new();
        for mount in definition.get("volumeMounts").and_then(Value::as_array).into_iter().flatten() {
            let name = field(mount, "/name");
            let Some(volume) = volumes.get(name) else { continue };
            let dir = root.join("volumes").join(name);
            std::fs::create_dir_all(&dir).map_err(|e| ExecError(format!("preparing {}: {e}", dir.display())))?;
            materialize(&mut sources, pod, volume, &dir).await?;
            let sub = field(mount, "/subPath");
            let target = if sub.is_empty() { dir } else { dir.join(sub) };
            mounts.push((field(mount, "/mountPath").trim_end_matches('/').to_string(), target));
        }
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));

        // The environment, in the container's order; later entries win as in a container.
        let mut env = BTreeMap::new();
        // A container's host name is the pod's `hostname` (the syncer sets the virtual name there).
        let hostname = Some(field(pod, "/spec/hostname")).filter(|h| !h.is_empty());
        env.insert("HOSTNAME".to_string(), hostname.unwrap_or(field(pod, "/metadata/name")).to_string());
        env.insert("HOME".to_string(), root.display().to_string());
        env.insert("PATH".to_string(), std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()));
        for from in definition.get("envFrom").and_then(Value::as_array).into_iter().flatten() {
            let prefix = field(from, "/prefix");
            let (secret, name) = match (from.get("configMapRef"), from.get("secretRef")) {
                (Some(r), _) => (false, field(r, "/name")),
                (_, Some(r)) => (true, field(r, "/name")),
                _ => continue,
            };
            for (key, bytes) in sources.data(secret, name).await.unwrap_or_default() {
                env.insert(format!("{prefix}{key}"), String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        for var in definition.get("env").and_then(Value::as_array).into_iter().flatten() {
            let name = field(var, "/name").to_string();
            let value = if let Some(value) = var.get("value").and_then(Value::as_str) {
                Some(expand(value, &env))
            } else if let Some(from) = var.get("valueFrom") {
                if let Some(r) = from.get("fieldRef") {
                    downward(pod, field(r, "/fieldPath"))
                } else if let Some(r) = from.get("configMapKeyRef").or_else(|| from.get("secretKeyRef")) {
                    let secret = from.get("secretKeyRef").is_some();
                    let data = sources.data(secret, field(r, "/name")).await;
                    data.and_then(|d| d.get(field(r, "/key")).map(|b| String::from_utf8_lossy(b).into_owned()))
                } else {
                    None
                }
            } else {
                Some(String::new())
            };
            if let Some(value) = value {
                env.insert(name, value);
            }
        }
        let mut sandbox = Sandbox { root: root.clone(), env, mounts, working_dir: root.clone() };
        let working = field(&definition, "/workingDir");
        if !working.is_empty() {
            let rewritten = PathBuf::from(sandbox.rewrite(working));
            sandbox.working_dir =
                if rewritten.starts_with(&root) { rewritten } else { root.join(working.trim_start_matches('/')) };
            std::fs::create_dir_all(&sandbox.working_dir).map_err(|e| ExecError(e.to_string()))?;
        }
        Ok(sandbox)
    }

    /// GNU tar `--transform` options that turn sandbox folders back into mount paths in member
    /// names (both without their leading `/`, as tar stores them).
    pub fn tar_transforms(&self) -> Vec<String> {
        self.mounts
            .iter()
            .map(|(path, target)| {
                let from = target.display().to_string();
                format!("--transform=s|^{}|{}|", from.trim_start_matches('/'), path.trim_start_matches('/'))
            })
            .collect()
    }

    /// `text` with every mount path (at a path boundary) replaced by its sandbox folder.
    pub fn rewrite(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        'scan: while !rest.is_empty() {
            let at_boundary = out.chars().last().is_none_or(|c| !(c.is_alphanumeric() || "._-/".contains(c)));
            if at_boundary {
                for (path, target) in &self.mounts {
                    if let Some(after) = rest.strip_prefix(path.as_str())
                        && after.chars().next().is_none_or(|c| c == '/' || !(c.is_alphanumeric() || "._-".contains(c)))
                    {
                        out.push_str(&target.display().to_string());
                        rest = after;
                        continue 'scan;
                    }
                }
            }
            let c = rest.chars().next().unwrap_or_default();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }
}

/// `$(NAME)` references to earlier variables expanded, as the kubelet does (`$$` escapes).
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(found) = env.get(&inner[..end])
        {
            out.push_str(found);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Writes the files of `volume` into `dir`.
async fn materialize(sources: &mut Sources, pod: &Value, volume: &Value, dir: &Path) -> Result<(), ExecError> {
    let downward_items = |items: &Value, dir: &Path| -> Result<(), ExecError> {
        for item in items.as_array().into_iter().flatten() {
            if let Some(value) = item.get("fieldRef").and_then(|r| downward(pod, field(r, "/fieldPath"))) {
                write_file(&dir.join(field(item, "/path")), value.as_bytes())?;
            }
        }
        Ok(())
    };
    if let Some(source) = volume.get("configMap").or_else(|| volume.get("secret")) {
        let secret = volume.get("secret").is_some();
        let name = if secret { field(source, "/secretName") } else { field(source, "/name") };
        if let Some(data) = sources.data(secret, name).await {
            write_keys(dir, &data, source.get("items"))?;
        }
    } else if let Some(source) = volume.get("downwardAPI") {
        downward_items(source.get("items").unwrap_or(&json!([])), dir)?;
    } else if let Some(projected) = volume.get("projected") {
        for source in projected.get("sources").and_then(Value::as_array).into_iter().flatten() {
            if let Some(r) = source.get("configMap").or_else(|| source.get("secret")) {
                let secret = source.get("secret").is_some();
                if let Some(data) = sources.data(secret, field(r, "/name")).await {
                    write_keys(dir, &data, r.get("items"))?;
                }
            } else if let Some(r) = source.get("downwardAPI") {
                downward_items(r.get("items").unwrap_or(&json!([])), dir)?;
            }
        }
    }
    // emptyDir and everything else: the folder itself, kept across execs.
    Ok(())
}

/// What an exec asks for.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// With a terminal, stderr goes to stdout (there is no pseudo-terminal: resizes are ignored).
    pub tty: bool,
}

/// Runs `options.command` in `sandbox`: stdin from frames on stream 0 (until the stream is closed
/// or the client goes), stdout and stderr as frames on 1 and 2, then the exit code. Returns the
/// exit code (None when the command could not start, with the reason).
pub async fn run(
    sandbox: &Sandbox,
    options: &ExecOptions,
    mut from_client: mpsc::Receiver<Vec<u8>>,
    to_client: mpsc::Sender<Vec<u8>>,
) -> Result<i32, ExecError> {
    let mut args: Vec<String> = options.command.iter().map(|a| sandbox.rewrite(a)).collect();
    if args.first().is_some_and(|p| p == "tar" || p.ends_with("/tar")) {
        // An archive made of rewritten paths names the mount paths again (`kubectl cp` from a
        // pod checks the member names); GNU tar takes options after its operands.
        args.extend(sandbox.tar_transforms());
    }
    let Some((program, rest)) = args.split_first() else {
        return Err(ExecError("you must specify a command".into()));
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(rest)
        .env_clear()
        .envs(&sandbox.env)
        .current_dir(&sandbox.working_dir)
        .stdin(if options.stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(if options.stdout { Stdio::piped() } else { Stdio::null() })
        .stderr(if options.stderr || (options.tty && options.stdout) { Stdio::piped() } else { Stdio::null() })
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| {
        ExecError(format!(
            "failed to exec in container: starting container process caused: exec: \"{}\": {e}",
            options.command[0]
        ))
    })?;
    let stdin = child.stdin.take();
    let feeding = tokio::spawn(async move {
        let mut stdin = stdin;
        while let Some(frame) = from_client.recv().await {
            match frame.split_first() {
                Some((0, data)) => {
                    if let Some(pipe) = stdin.as_mut()
                        && pipe.write_all(data).await.is_err()
                    {
                        stdin = None;
                    }
                }
                // v5: the client closed a stream; stdin's end is the command's end of input.
                Some((255, [0])) => stdin = None,
                _ => {}
            }
        }
    });
    let copy = |pipe: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>, stream: u8| {
        let to_client = to_client.clone();
        tokio::spawn(async move {
            let Some(mut pipe) = pipe else { return };
            let mut buffer = vec![0u8; 32 * 1024];
            while let Ok(n) = pipe.read(&mut buffer).await {
                if n == 0 || to_client.send([&[stream], &buffer[..n]].concat()).await.is_err() {
                    break;
                }
            }
        })
    };
    let error_stream = if options.tty { 1 } else { 2 };
    let out = copy(child.stdout.take().map(|p| Box::new(p) as _), 1);
    let err = copy(child.stderr.take().map(|p| Box::new(p) as _), error_stream);
    let status = child.wait().await.map_err(|e| ExecError(e.to_string()))?;
    let _ = out.await;
    let _ = err.await;
    feeding.abort();
    Ok(status.code().unwrap_or(128 + 9))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(mounts: &[(&str, &str)]) -> Sandbox {
        Sandbox {
            root: "/sb".into(),
            env: BTreeMap::new(),
            mounts: mounts.iter().map(|(m, t)| (m.to_string(), PathBuf::from(t))).collect(),
            working_dir: "/sb".into(),
        }
    }

    #[test]
    fn mount_paths_are_rewritten_at_path_boundaries_only() {
        let s = sandbox(&[("/etc/config", "/sb/volumes/cfg"), ("/data", "/sb/volumes/d")]);
        assert_eq!(s.rewrite("/etc/config/a"), "/sb/volumes/cfg/a");
        assert_eq!(s.rewrite("cat /etc/config/a && ls /data"), "cat /sb/volumes/cfg/a && ls /sb/volumes/d");
        assert_eq!(s.rewrite("/etc/configs"), "/etc/configs", "not a prefix of another name");
        assert_eq!(s.rewrite("/x/data"), "/x/data", "not inside another path");
        assert_eq!(s.rewrite("--dir=/data"), "--dir=/sb/volumes/d");
        assert_eq!(
            s.tar_transforms(),
            ["--transform=s|^sb/volumes/cfg|etc/config|", "--transform=s|^sb/volumes/d|data|"],
            "archives name the mount paths"
        );
    }

    #[test]
    fn downward_fields_and_expansion() {
        let pod = json!({"metadata": {"name": "web", "namespace": "ns", "labels": {"app": "w", "b": "2"}}, "status": {"podIP": "10.0.0.1"}});
        assert_eq!(downward(&pod, "metadata.name").unwrap(), "web");
        assert_eq!(downward(&pod, "metadata.labels['app']").unwrap(), "w");
        assert_eq!(downward(&pod, "metadata.labels").unwrap(), "app=\"w\"\nb=\"2\"");
        assert_eq!(downward(&pod, "status.podIP").unwrap(), "10.0.0.1");
        let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand("x-$(A)-$(B)-$$(A)", &env), "x-1-$(B)-$(A)");
    }
}
