//! Certificates and keys for one cluster, made with the `openssl` command: a CA, the apiserver's
//! serving certificate (valid for the cluster's loopback address and the in-cluster service
//! names) and the service-account signing key pair.
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};

/// Paths of the generated material.
#[derive(Debug, Clone)]
pub struct Pki {
    /// CA certificate (PEM), trusted by every client.
    pub ca_cert: PathBuf,
    /// CA key.
    pub ca_key: PathBuf,
    /// apiserver serving certificate.
    pub apiserver_cert: PathBuf,
    /// apiserver serving key.
    pub apiserver_key: PathBuf,
    /// The node's kubelet-API serving certificate.
    pub node_cert: PathBuf,
    /// Its key.
    pub node_key: PathBuf,
    /// Client certificate the apiserver presents to the node (`kubectl logs`).
    pub kubelet_client_cert: PathBuf,
    /// Its key.
    pub kubelet_client_key: PathBuf,
    /// Service-account signing key (private).
    pub sa_key: PathBuf,
    /// Service-account verification key (public).
    pub sa_pub: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::MissingProgram {
                    program: "openssl".into(),
                    hint: "apt-get install openssl".into(),
                }
            } else {
                Error::Io {
                    action: "running openssl in",
                    path: dir.to_path_buf(),
                    source: e,
                }
            }
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("openssl {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// Issues `<name>.crt`/`<name>.key` signed by the CA, with `subjectAltName` `san` and the
/// extended key usage `usage`.
fn leaf(dir: &Path, name: &str, subject: &str, san: Option<&str>, usage: &str) -> Result<()> {
    let ext = dir.join(format!("{name}.ext"));
    let mut text = format!("extendedKeyUsage={usage}\nkeyUsage=digitalSignature,keyEncipherment\n");
    if let Some(san) = san {
        text.push_str(&format!("subjectAltName={san}\n"));
    }
    std::fs::write(&ext, text).io("writing", &ext)?;
    let (key, csr, crt, extf) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-subj",
            subject,
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "3650",
            "-extfile",
            &extf,
            "-out",
            &crt,
        ],
    )
}

impl Pki {
    /// Generates everything into `dir` for a server reachable at `host`.
    pub fn generate(dir: &Path, host: Ipv4Addr, service_ip: Ipv4Addr) -> Result<Self> {
        std::fs::create_dir_all(dir).io("creating", dir)?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "3650",
            "-subj",
            "/CN=kontrast-local-ca",
        ];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
        openssl(dir, &ca)?;

        let names = format!(
            "IP:{host},IP:{service_ip},IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,\
             DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
        );
        leaf(
            dir,
            "apiserver",
            "/CN=kube-apiserver",
            Some(&names),
            "serverAuth",
        )?;
        leaf(
            dir,
            "node",
            "/CN=kontrast-node",
            Some(&format!("IP:{host}")),
            "serverAuth",
        )?;
        leaf(
            dir,
            "apiserver-kubelet-client",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            None,
            "clientAuth",
        )?;
        openssl(dir, &["genrsa", "-out", "sa.key", "2048"])?;
        openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
        Ok(Self::at(dir))
    }

    /// The paths `generate` writes, for an existing directory.
    pub fn at(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            apiserver_cert: dir.join("apiserver.crt"),
            apiserver_key: dir.join("apiserver.key"),
            node_cert: dir.join("node.crt"),
            node_key: dir.join("node.key"),
            kubelet_client_cert: dir.join("apiserver-kubelet-client.crt"),
            kubelet_client_key: dir.join("apiserver-kubelet-client.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        }
    }
}
