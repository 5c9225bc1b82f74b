//! What a simulated container writes to its log: what the simulated kubelet did with it. With
//! `follow` the stream goes on (a line a second) while the pod runs and ends when it stops or goes
//! away. Options mean what they mean to a real kubelet (`/containerLogs`): `timestamps`,
//! `tailLines`, `limitBytes`, `previous`.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;

/// How often a followed simulated container writes a line.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// The options of one log request, read from its query string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// The container (kube-apiserver always names one).
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
}

impl LogOptions {
    /// Parses `container=c&follow=true&tailLines=1...` (unknown keys ignored).
    pub fn from_query(query: &str) -> Self {
        let mut options = LogOptions::default();
        let yes = |v: &str| matches!(v, "true" | "1" | "True");
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "container" if !value.is_empty() => options.container = Some(value.to_string()),
                "follow" => options.follow = yes(value),
                "previous" => options.previous = yes(value),
                "timestamps" => options.timestamps = yes(value),
                "tailLines" => options.tail_lines = value.parse().ok(),
                "limitBytes" => options.limit_bytes = value.parse().ok().filter(|n| *n > 0),
                _ => {}
            }
        }
        options
    }
}

/// Why a log cannot be read (a kubelet answers 400 with the message).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct LogError(pub String);

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

fn line(options: &LogOptions, text: &str) -> String {
    if options.timestamps { format!("{} {text}\n", now()) } else { format!("{text}\n") }
}

fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// One piece of a container's output: whether it went to stderr, and the bytes.
pub type Output = (bool, Bytes);

/// The log of `container` of pod `namespace/name`. With `client`, the pod is read: a container
/// whose command is a script the simulator can follow ([`crate::script`]) logs what the script
/// prints, when it prints it; any other the lines of the simulated kubelet, a line a second while
/// followed and running.
pub fn stream(
    client: Option<Client>,
    namespace: &str,
    name: &str,
    options: &LogOptions,
) -> Result<BoxStream<'static, Result<Bytes, std::io::Error>>, LogError> {
    let container = options.container.clone().unwrap_or_else(|| "main".into());
    if options.previous {
        // Simulated containers never restart.
        return Err(LogError(format!("previous terminated container \"{container}\" in pod \"{name}\" not found")));
    }
    let all = outputs(client, namespace, name, options).map(|(_, bytes)| Ok(bytes));
    Ok(match options.limit_bytes {
        None => Box::pin(all),
        Some(limit) => Box::pin(limited(all, limit)),
    })
}

/// What a container writes from now on, stdout and stderr apart (what `attach` shows).
pub fn output(client: Client, namespace: &str, name: &str, container: &str) -> BoxStream<'static, Output> {
    let options = LogOptions {
        container: Some(container.to_string()),
        follow: true,
        tail_lines: Some(0),
        ..LogOptions::default()
    };
    outputs(Some(client), namespace, name, &options)
}

fn outputs(client: Option<Client>, namespace: &str, name: &str, options: &LogOptions) -> BoxStream<'static, Output> {
    let (namespace, name, options) = (namespace.to_string(), name.to_string(), options.clone());
    let Some(client) = client else { return synthetic(None, namespace, name, options) };
    Box::pin(
        futures::stream::once(async move {
            let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &namespace);
            let pod = pods.get_opt(&name).await.ok().flatten();
            let container = options.container.clone().unwrap_or_default();
            match pod.as_ref().and_then(|pod| script_of(pod, &container)) {
                Some((script, started)) => scripted(pods, name, script, started, options),
                None => synthetic(Some(client), namespace, name, options),
            }
        })
        .flatten(),
    )
}

/// The script a container of `pod` runs, and when it started.
fn script_of(pod: &Pod, container: &str) -> Option<(crate::script::Script, jiff::Timestamp)> {
    let spec = pod.spec.as_ref()?;
    let (command, args) = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container)
        .map(|c| (c.command.clone(), c.args.clone()))?;
    let words: Vec<String> = command.into_iter().flatten().chain(args.into_iter().flatten()).collect();
    let script = crate::script::run(&words)?;
    let status = pod.status.as_ref();
    let state = status
        .and_then(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
                .find(|c| c.name == container)
        })
        .and_then(|c| c.state.clone());
    let started = state
        .as_ref()
        .and_then(|s| {
            s.running
                .as_ref()
                .and_then(|r| r.started_at.clone())
                .or(s.terminated.as_ref().and_then(|t| t.started_at.clone()))
        })
        .or_else(|| status.and_then(|s| s.start_time.clone()))
        .map(|t| t.0)
        .unwrap_or_else(jiff::Timestamp::now);
    Some((script, started))
}

fn stamped(options: &LogOptions, at: jiff::Timestamp, text: &str) -> Bytes {
    Bytes::from(if options.timestamps {
        format!("{} {text}\n", at.strftime("%Y-%m-%dT%H:%M:%S%.9fZ"))
    } else {
        format!("{text}\n")
    })
}

/// A script's lines: those already written (the last `tailLines` of them), then with `follow`
/// the rest as their time comes, until the script ends or the pod goes.
fn scripted(
    pods: kube::Api<Pod>,
    name: String,
    script: crate::script::Script,
    started: jiff::Timestamp,
    options: LogOptions,
) -> BoxStream<'static, Output> {
    let elapsed = jiff::Timestamp::now().duration_since(started).unsigned_abs();
    let at = move |offset: Duration| started + jiff::SignedDuration::try_from(offset).unwrap_or_default();
    let (past, future): (Vec<_>, Vec<_>) = script.lines.into_iter().partition(|l| l.at <= elapsed);
    let mut past: Vec<Output> = past.into_iter().map(|l| (l.stderr, stamped(&options, at(l.at), &l.text))).collect();
    if let Some(tail) = options.tail_lines {
        past.drain(..past.len().saturating_sub(tail));
    }
    let first = futures::stream::iter(past);
    if !options.follow {
        return Box::pin(first);
    }
    let rest = futures::stream::unfold(future.into_iter(), move |mut lines| {
        let (pods, name, options) = (pods.clone(), name.clone(), options.clone());
        async move {
            let line = lines.next()?;
            // Wait in slices of a second, so that a deleted pod ends the stream.
            loop {
                let due = at(line.at);
                let left = due.duration_since(jiff::Timestamp::now());
                if left <= jiff::SignedDuration::ZERO {
                    break;
                }
                tokio::time::sleep(left.unsigned_abs().min(Duration::from_secs(1))).await;
                if !matches!(pods.get_opt(&name).await, Ok(Some(ref pod)) if pod.metadata.deletion_timestamp.is_none())
                {
                    return None;
                }
            }
            Some(((line.stderr, stamped(&options, at(line.at), &line.text)), lines))
        }
    });
    Box::pin(first.chain(rest))
}

/// The simulated kubelet's own lines about a container it cannot follow the script of; `client`
/// (when given) is asked whether the pod still runs while a followed log goes on.
fn synthetic(
    client: Option<Client>,
    namespace: String,
    name: String,
    options: LogOptions,
) -> BoxStream<'static, Output> {
    let container = options.container.clone().unwrap_or_else(|| "main".into());
    let mut lines = vec![
        line(
            &options,
            &format!("simulated container {container} of pod {namespace}/{name} started on a vkube simulated node"),
        ),
        line(&options, &format!("simulated container {container} is running")),
    ];
    if let Some(tail) = options.tail_lines {
        lines.drain(..lines.len().saturating_sub(tail));
    }
    let first = futures::stream::iter(lines.into_iter().map(|l| (false, Bytes::from(l))));
    let ticks: BoxStream<'static, Output> = match client.filter(|_| options.follow) {
        None => Box::pin(futures::stream::empty()),
        Some(client) => {
            let pods: kube::Api<Pod> = kube::Api::namespaced(client, &namespace);
            Box::pin(futures::stream::unfold(1u64, move |tick| {
                let (pods, name, container, options) = (pods.clone(), name.clone(), container.clone(), options.clone());
                async move {
                    tokio::time::sleep(FOLLOW_INTERVAL).await;
                    match pods.get_opt(&name).await {
                        Ok(Some(pod)) if is_running(&pod) => {
                            let text = line(&options, &format!("simulated container {container} is running ({tick})"));
                            Some(((false, Bytes::from(text)), tick + 1))
                        }
                        _ => None,
                    }
                }
            }))
        }
    };
    Box::pin(first.chain(ticks))
}

/// The first `limit` bytes of `stream`, then its end.
fn limited(
    stream: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    limit: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::unfold((Box::pin(stream), limit), |(mut stream, left)| async move {
        if left == 0 {
            return None;
        }
        match stream.next().await? {
            Ok(mut bytes) => {
                bytes.truncate(left);
                let left = left - bytes.len();
                Some((Ok(bytes), (stream, left)))
            }
            Err(error) => Some((Err(error), (stream, 0))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text(options: &str) -> Result<String, LogError> {
        let stream = stream(None, "default", "web", &LogOptions::from_query(options))?;
        let chunks: Vec<_> = stream.collect().await;
        Ok(chunks.into_iter().map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap()).collect())
    }

    #[tokio::test]
    async fn options_shape_the_log_as_a_kubelet_does() {
        let all = text("container=web").await.unwrap();
        assert_eq!(
            all,
            "simulated container web of pod default/web started on a vkube simulated node\nsimulated container web is running\n"
        );
        assert_eq!(text("container=web&tailLines=1").await.unwrap(), "simulated container web is running\n");
        assert_eq!(text("container=web&limitBytes=9").await.unwrap(), "simulated");
        let stamped = text("container=web&timestamps=true").await.unwrap();
        let first = stamped.lines().next().unwrap();
        let (stamp, rest) = first.split_once(' ').unwrap();
        assert!(stamp.parse::<jiff::Timestamp>().is_ok() && rest.starts_with("simulated container web"), "{first}");
        assert_eq!(
            text("container=web&previous=true").await.unwrap_err().0,
            "previous terminated container \"web\" in pod \"web\" not found"
        );
    }
}
