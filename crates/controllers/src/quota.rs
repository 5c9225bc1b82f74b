//! The resource quota controller (kube-controller-manager's `resourcequota` controller): keeps
//! each ResourceQuota's `status.hard` equal to its `spec.hard` and `status.used` equal to what
//! its namespace's objects use (`vkube_quota::calculate_used`). A namespace is recounted when a
//! quota in it or any object a quota counts changes there, and every quota every 30 s (the
//! admission charges of writes that then failed are given back that way).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use vkube_quota::{Kind, ResourceList};

use crate::{lock, value};

/// How often every quota is recounted even when nothing was seen to change.
const RESYNC: Duration = Duration::from_secs(30);

/// Runs the controller until the future is dropped.
pub async fn run(client: Client) {
    let (dirty, mut work) = mpsc::unbounded_channel::<String>();
    let quotas = Arc::new(Mutex::new(BTreeMap::<(String, String), ResourceQuota>::new()));
    let watched = Arc::new(Mutex::new(HashMap::<Kind, tokio::task::JoinHandle<()>>::new()));
    let resources = Arc::new(Mutex::new(HashMap::<Kind, Option<ApiResource>>::new()));
    let quota_task = {
        let (quotas, dirty, client, watched, resources) =
            (quotas.clone(), dirty.clone(), client.clone(), watched.clone(), resources.clone());
        tokio::spawn(async move {
            let stream = watcher::watcher(Api::<ResourceQuota>::all(client.clone()), watcher::Config::default())
                .default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let changed: Vec<(ResourceQuota, bool)> = match event {
                    Ok(Event::Apply(q) | Event::InitApply(q)) => vec![(q, false)],
                    Ok(Event::Delete(q)) => vec![(q, true)],
                    _ => continue,
                };
                for (quota, deleted) in changed {
                    let key = (quota.namespace().unwrap_or_default(), quota.name_any());
                    let _ = dirty.send(key.0.clone());
                    let hard = vkube_quota::resource_list(value(&quota.spec).pointer("/hard"));
                    if deleted {
                        lock(&quotas).remove(&key);
                    } else {
                        lock(&quotas).insert(key, quota);
                    }
                    for kind in vkube_quota::kinds(&hard) {
                        watch_kind(&client, kind, &watched, &resources, &quotas, &dirty).await;
                    }
                }
            }
        })
    };
    let resync = {
        let (quotas, dirty) = (quotas.clone(), dirty.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESYNC).await;
                let namespaces: BTreeSet<String> = lock(&quotas).keys().map(|(ns, _)| ns.clone()).collect();
                for namespace in namespaces {
                    let _ = dirty.send(namespace);
                }
            }
        })
    };
    let _tasks = crate::Tasks(vec![quota_task, resync]);
    let _watches = WatchGuard(watched.clone());
    while let Some(first) = work.recv().await {
        // Changes come in bursts: wait a moment and recount each namespace once.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut batch = BTreeSet::from([first]);
        while let Ok(more) = work.try_recv() {
            batch.insert(more);
        }
        for namespace in batch {
            let in_namespace: Vec<ResourceQuota> =
                lock(&quotas).iter().filter(|((ns, _), _)| *ns == namespace).map(|(_, q)| q.clone()).collect();
            for quota in in_namespace {
                if let Err(error) = sync_quota(&client, &resources, &quota).await {
                    tracing::debug!(%namespace, quota = %quota.name_any(), %error, "quota recount failed; retrying");
                    let dirty = dirty.clone();
                    let namespace = namespace.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let _ = dirty.send(namespace);
                    });
                }
            }
        }
    }
}

/// Aborts the per-kind watches when the controller stops.
struct WatchGuard(Arc<Mutex<HashMap<Kind, tokio::task::JoinHandle<()>>>>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        for (_, task) in lock(&self.0).drain() {
            task.abort();
        }
    }
}

/// The API resource serving `kind`, found through discovery (cached; `None`: not served).
async fn api_resource(
    client: &Client,
    resources: &Mutex<HashMap<Kind, Option<ApiResource>>>,
    kind: &Kind,
) -> Option<ApiResource> {
    if let Some(known) = lock(resources).get(kind) {
        return known.clone();
    }
    let found = match kube::discovery::oneshot::group(client, &kind.0).await {
        Ok(group) => group.recommended_resources().into_iter().find(|(r, _)| r.plural == kind.1).map(|(r, _)| r),
        Err(error) => {
            tracing::debug!(group = %kind.0, %error, "quota: discovery failed");
            return None;
        }
    };
    lock(resources).insert(kind.clone(), found.clone());
    found
}

/// Watches the metadata of `kind`'s objects (once per kind): a change in a namespace with
/// quotas marks it for a recount.
async fn watch_kind(
    client: &Client,
    kind: Kind,
    watched: &Mutex<HashMap<Kind, tokio::task::JoinHandle<()>>>,
    resources: &Mutex<HashMap<Kind, Option<ApiResource>>>,
    quotas: &Arc<Mutex<BTreeMap<(String, String), ResourceQuota>>>,
    dirty: &mpsc::UnboundedSender<String>,
) {
    if lock(watched).contains_key(&kind) {
        return;
    }
    let Some(resource) = api_resource(client, resources, &kind).await else {
        // Not served (yet): looked up again at the next quota change.
        lock(resources).remove(&kind);
        return;
    };
    let api = Api::<PartialObjectMeta<DynamicObject>>::all_with(client.clone(), &resource);
    let (quotas, dirty) = (quotas.clone(), dirty.clone());
    let task = tokio::spawn(async move {
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let namespace = match event {
                Ok(Event::Apply(o) | Event::Delete(o)) => o.namespace().unwrap_or_default(),
                // The initial list changes nothing the first count did not see.
                _ => continue,
            };
            let has_quota = lock(&quotas).keys().any(|(ns, _)| *ns == namespace);
            if has_quota {
                let _ = dirty.send(namespace);
            }
        }
    });
    lock(watched).insert(kind, task);
}

/// Recounts one quota and writes its status when it differs.
async fn sync_quota(
    client: &Client,
    resources: &Mutex<HashMap<Kind, Option<ApiResource>>>,
    quota: &ResourceQuota,
) -> Result<(), kube::Error> {
    let namespace = quota.namespace().unwrap_or_default();
    let object = value(quota);
    let hard = vkube_quota::resource_list(object.pointer("/spec/hard"));
    let mut listed: HashMap<Kind, Option<Vec<Value>>> = HashMap::new();
    for kind in vkube_quota::kinds(&hard) {
        let items = match api_resource(client, resources, &kind).await {
            Some(resource) => {
                let api = Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &resource);
                let list = api.list(&ListParams::default()).await?;
                Some(list.items.iter().map(value).collect())
            }
            None => {
                lock(resources).remove(&kind);
                None
            }
        };
        listed.insert(kind, items);
    }
    let now = jiff::Timestamp::now().as_second();
    let used = vkube_quota::calculate_used(&object, &mut |kind| listed.get(kind).cloned().flatten(), now);
    let status_hard = vkube_quota::resource_list(object.pointer("/status/hard"));
    let status_used = vkube_quota::resource_list(object.pointer("/status/used"));
    if same(&status_hard, &hard) && same(&status_used, &used) {
        return Ok(());
    }
    let mut updated = object.clone();
    updated["status"] = json!({"hard": vkube_quota::to_json(&hard), "used": vkube_quota::to_json(&used)});
    let api = Api::<ResourceQuota>::namespaced(client.clone(), &namespace);
    let updated: ResourceQuota = serde_json::from_value(updated).map_err(kube::Error::SerdeError)?;
    let params = PostParams { field_manager: Some(crate::MANAGER.into()), ..Default::default() };
    api.replace_status(&quota.name_any(), &params, &updated).await?;
    Ok(())
}

/// Equal names with equal values (`1` and `1000m` are the same).
fn same(a: &ResourceList, b: &ResourceList) -> bool {
    a.len() == b.len() && a.iter().all(|(name, q)| b.get(name) == Some(q))
}
