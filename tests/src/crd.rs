//! Installing the ContrastiveRun CRD into a local 1.20 cluster (without its CEL rules, which
//! that apiserver does not know) and waiting until it serves the kind.
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;

use crate::error::Result;
use crate::wait;

/// Creates the CRD and waits up to a minute for it to be Established.
pub async fn install(client: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(
        &PostParams::default(),
        &kontrast_api::crd::crd_without_cel(),
    )
    .await?;
    wait::until(
        "CRD established",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let crds = crds.clone();
            async move {
                let c = crds.get("contrastiveruns.kontrast.dev").await.ok()?;
                c.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        },
    )
    .await
}
