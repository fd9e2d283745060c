//! Kubeconfig files and token credentials for the cluster's users.
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// One identity of the token-auth file: token, user name, uid and groups.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Short name, also the kubeconfig's file stem.
    pub name: &'static str,
    /// Kubernetes user name.
    pub user: String,
    /// Groups the user is in.
    pub groups: Vec<&'static str>,
    /// Bearer token.
    pub token: String,
}

/// A random 32-hex-digit token from the kernel's RNG.
pub fn random_token() -> Result<String> {
    let mut buf = [0u8; 16];
    let path = Path::new("/dev/urandom");
    use std::io::Read;
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .io("reading", path)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes the apiserver's `--token-auth-file` (CSV: token,user,uid,"group1,group2").
pub fn write_token_file(path: &Path, identities: &[Identity]) -> Result<()> {
    let body: String = identities
        .iter()
        .map(|i| {
            format!(
                "{},{},{},\"{}\"\n",
                i.token,
                i.user,
                i.name,
                i.groups.join(",")
            )
        })
        .collect();
    write_private(path, &body)
}

/// Writes a kubeconfig for `identity` against `server`, trusting `ca`.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    identity: &Identity,
) -> Result<PathBuf> {
    let body = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kontrast-local\n  cluster:\n    server: {server}\n    \
         certificate-authority: {ca}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: \
         kontrast-local\n  context:\n    cluster: kontrast-local\n    user: {name}\n    namespace: default\n\
         current-context: kontrast-local\n",
        ca = ca.display(),
        name = identity.name,
        token = identity.token,
    );
    write_private(path, &body)?;
    Ok(path.to_path_buf())
}

fn write_private(path: &Path, body: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .io("creating", path)?;
    std::io::Write::write_all(&mut f, body.as_bytes()).io("writing", path)
}

/// Loads a `kube::Client` from a kubeconfig file.
pub async fn client(path: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| crate::Error::Kubeconfig(format!("{}: {e}", path.display())))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| crate::Error::Kubeconfig(format!("{}: {e}", path.display())))?;
    kube::Client::try_from(config).map_err(crate::Error::Kube)
}
