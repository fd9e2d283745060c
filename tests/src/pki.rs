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

        let san = format!(
            "subjectAltName=IP:{host},IP:{service_ip},IP:127.0.0.1,DNS:localhost,DNS:kubernetes,\
             DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n\
             extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
        );
        std::fs::write(dir.join("apiserver.ext"), san).io("writing", dir.join("apiserver.ext"))?;
        let mut req = vec!["req", "-new", "-subj", "/CN=kube-apiserver"];
        req.extend(ec);
        req.extend(["-keyout", "apiserver.key", "-out", "apiserver.csr"]);
        openssl(dir, &req)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "apiserver.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "3650",
                "-extfile",
                "apiserver.ext",
                "-out",
                "apiserver.crt",
            ],
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
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        }
    }
}
