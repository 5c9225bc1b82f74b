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

/// The log of `container` of pod `namespace/name`; `client` (when given) is asked whether the pod
/// still runs while a followed log goes on.
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
    let mut lines = vec![
        line(
            options,
            &format!("simulated container {container} of pod {namespace}/{name} started on a vkube simulated node"),
        ),
        line(options, &format!("simulated container {container} is running")),
    ];
    if let Some(tail) = options.tail_lines {
        lines.drain(..lines.len().saturating_sub(tail));
    }
    let first = futures::stream::iter(lines.into_iter().map(|l| Ok(Bytes::from(l))));
    let ticks: BoxStream<'static, Result<Bytes, std::io::Error>> = match client.filter(|_| options.follow) {
        None => Box::pin(futures::stream::empty()),
        Some(client) => {
            let pods: kube::Api<Pod> = kube::Api::namespaced(client, namespace);
            let (name, options) = (name.to_string(), options.clone());
            Box::pin(futures::stream::unfold(1u64, move |tick| {
                let (pods, name, container, options) = (pods.clone(), name.clone(), container.clone(), options.clone());
                async move {
                    tokio::time::sleep(FOLLOW_INTERVAL).await;
                    match pods.get_opt(&name).await {
                        Ok(Some(pod)) if is_running(&pod) => {
                            let text = line(&options, &format!("simulated container {container} is running ({tick})"));
                            Some((Ok(Bytes::from(text)), tick + 1))
                        }
                        _ => None,
                    }
                }
            }))
        }
    };
    let all = first.chain(ticks);
    Ok(match options.limit_bytes {
        None => Box::pin(all),
        Some(limit) => Box::pin(limited(all, limit)),
    })
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
