//! Name resolution for pods: every pod process sees its own `/etc/hosts` (bind-mounted, as
//! kubelet does) listing itself and every pod that has a `hostname` and `subdomain`, under the
//! names cluster DNS would give them: `<hostname>.<subdomain>.<namespace>.svc.cluster.local`,
//! `…svc`, and within the same namespace `<hostname>.<subdomain>`. The file is rewritten in place
//! when pods come and go, so a rank that starts before its peers still resolves them later.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Cluster DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// What the hosts files need to know about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodName {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// `spec.hostname`, defaulting to the pod name.
    pub hostname: String,
    /// `spec.subdomain`.
    pub subdomain: Option<String>,
    /// Pod IP.
    pub ip: Ipv4Addr,
}

/// The `/etc/hosts` text for pod `me` among `all` pods.
pub fn hosts_file(me: &PodName, all: &[PodName]) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file (kontrast-node).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    let own = names(me, me);
    out.push_str(&format!("{}\t{}\n", me.ip, own.join(" ")));
    for p in all {
        if p.namespace == me.namespace && p.name == me.name {
            continue;
        }
        if p.subdomain.is_some() {
            out.push_str(&format!("{}\t{}\n", p.ip, names(p, me).join(" ")));
        }
    }
    out
}

/// The names `p` resolves by, as seen from `viewer`.
fn names(p: &PodName, viewer: &PodName) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(sub) = &p.subdomain {
        v.push(format!(
            "{}.{sub}.{}.svc.{CLUSTER_DOMAIN}",
            p.hostname, p.namespace
        ));
        v.push(format!("{}.{sub}.{}.svc", p.hostname, p.namespace));
        if p.namespace == viewer.namespace {
            v.push(format!("{}.{sub}", p.hostname));
        }
    }
    if p.namespace == viewer.namespace && p.name == viewer.name {
        v.push(p.hostname.clone());
    }
    v
}

/// The hosts files of all running pods, kept current.
#[derive(Debug, Default)]
pub struct HostsTable {
    pods: BTreeMap<(String, String), (PodName, PathBuf)>,
}

impl HostsTable {
    /// Adds a pod whose hosts file lives at `file` and rewrites every file.
    pub fn add(&mut self, pod: PodName, file: PathBuf) -> std::io::Result<()> {
        self.pods
            .insert((pod.namespace.clone(), pod.name.clone()), (pod, file));
        self.rewrite()
    }

    /// Removes a pod and rewrites the remaining files.
    pub fn remove(&mut self, namespace: &str, name: &str) -> std::io::Result<()> {
        self.pods.remove(&(namespace.to_string(), name.to_string()));
        self.rewrite()
    }

    fn rewrite(&self) -> std::io::Result<()> {
        let all: Vec<PodName> = self.pods.values().map(|(p, _)| p.clone()).collect();
        for (p, file) in self.pods.values() {
            write_in_place(file, &hosts_file(p, &all))?;
        }
        Ok(())
    }
}

/// Rewrites `file` keeping its inode (a bind mount pins the inode, so rename would hide the update).
fn write_in_place(file: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(file).is_ok_and(|old| old == text) {
        return Ok(());
    }
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(file)?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, sub: Option<&str>, last: u8) -> PodName {
        PodName {
            namespace: ns.into(),
            name: name.into(),
            hostname: name.into(),
            subdomain: sub.map(Into::into),
            ip: Ipv4Addr::new(127, 9, 1, last),
        }
    }

    #[test]
    fn a_pod_resolves_siblings_through_their_headless_service_names() {
        let a = pod("ns", "a", Some("svc"), 1);
        let b = pod("ns", "b", Some("svc"), 2);
        let text = hosts_file(&a, &[a.clone(), b]);
        assert!(
            text.contains("127.9.1.2\tb.svc.ns.svc.cluster.local b.svc.ns.svc b.svc\n"),
            "{text}"
        );
        assert!(
            text.contains("127.9.1.1\ta.svc.ns.svc.cluster.local a.svc.ns.svc a.svc a\n"),
            "{text}"
        );
    }

    #[test]
    fn short_names_are_only_for_the_same_namespace_and_pods_without_subdomain_are_private() {
        let a = pod("ns", "a", None, 1);
        let other = pod("other", "c", Some("svc"), 3);
        let lonely = pod("ns", "d", None, 4);
        let text = hosts_file(&a, &[a.clone(), other, lonely]);
        assert!(
            text.contains("127.9.1.3\tc.svc.other.svc.cluster.local c.svc.other.svc\n"),
            "{text}"
        );
        assert!(!text.contains("127.9.1.4"), "{text}");
        assert!(text.contains("127.9.1.1\ta\n"), "{text}");
    }
}
