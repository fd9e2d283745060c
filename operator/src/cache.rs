//! Watch-fed caches of the ConfigMaps, Services and pods the operator owns, so that a reconcile
//! whose desired objects have not changed neither reads nor writes them. Every applied object carries
//! a hash of what was applied ([`APPLIED_HASH`]); an object whose cached copy has the same hash
//! is left alone. A stale cache costs one redundant (idempotent) apply, never a missed one: an
//! object deleted behind the operator's back disappears from the cache and is applied again.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kontrast_api::labels;
use kube::api::{Api, Resource};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;

/// Annotation holding the hash of the object as last applied.
pub const APPLIED_HASH: &str = "kontrast.dev/applied-hash";

/// The caches and the tasks that feed them (stopped on drop).
pub struct Owned {
    config_maps: Store<ConfigMap>,
    services: Store<Service>,
    pods: Store<Pod>,
    tasks: Vec<JoinHandle<()>>,
}

fn reflect<K>(api: Api<K>) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().labels(labels::RUN);
    let stream = reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .touched_objects();
    let task = tokio::spawn(async move {
        stream.for_each(|_| futures::future::ready(())).await;
    });
    (reader, task)
}

impl Owned {
    /// Starts watching the labelled ConfigMaps and Services of `namespace` (all when `None`).
    pub fn start(client: &kube::Client, namespace: Option<&str>) -> Self {
        let (config_maps, a) = match namespace {
            Some(ns) => reflect(Api::namespaced(client.clone(), ns)),
            None => reflect(Api::all(client.clone())),
        };
        let (services, b) = match namespace {
            Some(ns) => reflect(Api::namespaced(client.clone(), ns)),
            None => reflect(Api::all(client.clone())),
        };
        let (pods, c) = match namespace {
            Some(ns) => reflect(Api::namespaced(client.clone(), ns)),
            None => reflect(Api::all(client.clone())),
        };
        Self {
            config_maps,
            services,
            pods,
            tasks: vec![a, b, c],
        }
    }

    /// The cached pods of `ns` whose labels include all of `selector`.
    pub fn pods(&self, ns: &str, selector: &[(&str, &str)]) -> Vec<Pod> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .filter(|p| {
                let labels = p.metadata.labels.as_ref();
                selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(*k)).map(String::as_str) == Some(*v))
            })
            .map(|p| (*p).clone())
            .collect()
    }

    /// Whether the cached ConfigMap `ns/name` is `desired` as applied (same hash, same data:
    /// an edit behind the operator's back is applied over).
    pub fn config_map_is(&self, ns: &str, name: &str, desired: &ConfigMap, hash: &str) -> bool {
        self.config_maps
            .get(&ObjectRef::new(name).within(ns))
            .is_some_and(|c| applied_hash(&*c).as_deref() == Some(hash) && c.data == desired.data)
    }

    /// Whether the cached Service `ns/name` is `desired` as applied (same hash, same selector).
    pub fn service_is(&self, ns: &str, name: &str, desired: &Service, hash: &str) -> bool {
        let selector = |s: &Service| s.spec.as_ref().and_then(|s| s.selector.clone());
        self.services
            .get(&ObjectRef::new(name).within(ns))
            .is_some_and(|c| {
                applied_hash(&*c).as_deref() == Some(hash) && selector(&c) == selector(desired)
            })
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn applied_hash<K: Resource>(obj: &K) -> Option<String> {
    obj.meta().annotations.as_ref()?.get(APPLIED_HASH).cloned()
}

/// Marks `obj` with the hash of its content (without the mark) and returns the hash.
pub fn mark<K: Resource + serde::Serialize>(obj: &mut K) -> String {
    let annotations = &mut obj.meta_mut().annotations;
    if let Some(a) = annotations.as_mut() {
        a.remove(APPLIED_HASH);
        // An emptied map must hash like an absent one.
        if a.is_empty() {
            *annotations = None;
        }
    }
    let mut h = DefaultHasher::new();
    serde_json::to_string(obj).unwrap_or_default().hash(&mut h);
    let hash = format!("{:016x}", h.finish());
    obj.meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_HASH.to_string(), hash.clone());
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_depends_on_the_content_only() {
        let mut a = ConfigMap::default();
        a.metadata.name = Some("x".into());
        let mut b = a.clone();
        let (ha, hb) = (mark(&mut a), mark(&mut b));
        assert_eq!(ha, hb);
        // Marking twice gives the same hash: the mark itself is not hashed.
        assert_eq!(mark(&mut a), ha);
        b.data = Some([("k".to_string(), "v".to_string())].into());
        assert_ne!(mark(&mut b), ha);
        assert_eq!(
            b.metadata
                .annotations
                .as_ref()
                .and_then(|m| m.get(APPLIED_HASH)),
            Some(&mark(&mut b.clone()))
        );
    }
}
