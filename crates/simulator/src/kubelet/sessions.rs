//! The sessions of `exec` and `attach` into simulated containers, whoever serves the protocol
//! (vkube's own host API server in-process, or the kubelet API for a real control plane):
//! exec runs the command in the pod's sandbox ([`super::exec`]); attach streams the container's
//! output, or, with input, runs the container's own command there.

use std::path::PathBuf;

use futures::StreamExt;
use kube::Client;
use vkube_streams::{Frames, Session, StreamRequest, channel};

use super::exec::{self, ExecOptions, Sandbox};
use super::logs;

/// Opens the session `request` asks for (the pod as read), or says why not (the kubelet's words).
pub async fn open(client: Client, base: PathBuf, exec: bool, request: StreamRequest) -> Result<Session, String> {
    if request.subresource == "exec" && !exec {
        return Err("unable to upgrade connection: exec is switched off on this simulated host (--exec off)".into());
    }
    if !running(&request.pod, &request.container) {
        return Err(format!("unable to upgrade connection: container not found (\"{}\")", request.container));
    }
    let first = vkube_streams::first_output(&request);
    let mut request = request;
    if request.subresource == "attach" && request.stdin && exec {
        // Attaching with input to a simulated container talks to its process: the
        // container's command runs in the pod's sandbox (a shell when it names none, as
        // for `kubectl debug -it --image=busybox`). With exec off, only its output.
        request.command = container_command(&request.pod, &request.container);
    } else if request.subresource == "attach" {
        // A simulated container's output from now on, stdout and stderr apart.
        let mut log = logs::output(client, &request.namespace, &request.name, &request.container);
        let session: Session = Box::new(move |frames: Frames| {
            Box::pin(async move {
                let _ = frames.to_client.send(vec![first]).await;
                while let Some((stderr, chunk)) = log.next().await {
                    let (wanted, channel) =
                        if stderr { (request.stderr, channel::STDERR) } else { (request.stdout, channel::STDOUT) };
                    if wanted && frames.to_client.send(vkube_streams::frame(channel, &chunk)).await.is_err() {
                        break;
                    }
                }
            })
        });
        return Ok(session);
    }
    let sandbox = Sandbox::prepare(client, &base, &request.pod, &request.container)
        .await
        .map_err(|error| format!("unable to upgrade connection: {}", error.0))?;
    let session: Session = Box::new(move |frames: Frames| {
        Box::pin(async move {
            let Frames { from_client, to_client } = frames;
            let _ = to_client.send(vec![first]).await;
            let options = ExecOptions {
                command: request.command.clone(),
                stdin: request.stdin,
                stdout: request.stdout,
                stderr: request.stderr,
                tty: request.tty,
            };
            let status = match exec::run(&sandbox, &options, from_client, to_client.clone()).await {
                Ok(code) => vkube_streams::exit_status(code),
                Err(error) => vkube_streams::failure_status(&error.0),
            };
            let _ = to_client.send(vkube_streams::frame(channel::ERROR, status.to_string().as_bytes())).await;
        })
    });
    Ok(session)
}

/// The command and arguments of `container` of `pod` (`sh` when it names none).
fn container_command(pod: &serde_json::Value, container: &str) -> Vec<String> {
    let definition = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|key| {
            pod.pointer(&format!("/spec/{key}")).and_then(serde_json::Value::as_array).into_iter().flatten()
        })
        .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(container));
    let words = |key: &str| -> Vec<String> {
        definition
            .and_then(|c| c.get(key))
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str().map(String::from))
            .collect()
    };
    let command = [words("command"), words("args")].concat();
    if command.is_empty() { vec!["sh".into()] } else { command }
}

/// Whether `container` of `pod` is running (its status says so).
fn running(pod: &serde_json::Value, container: &str) -> bool {
    ["initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"].iter().any(|key| {
        pod.pointer(&format!("/status/{key}"))
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .any(|s| s.get("name").and_then(|n| n.as_str()) == Some(container) && s.pointer("/state/running").is_some())
    })
}
