//! The local cluster, end to end: real etcd, kube-apiserver, controller-manager, scheduler,
//! the local node and Prometheus. Each test starts its own cluster.
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kontrast_tests::testing::{TestCluster, phase, pod_ip, terminated};
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

async fn start(name: &str) -> TestCluster {
    TestCluster::start(
        env!("CARGO_TARGET_TMPDIR"),
        name,
        env!("CARGO_BIN_EXE_kontrast-node"),
    )
    .await
    .expect("cluster starts")
}

fn python() -> String {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or(&"python3")
        .to_string()
}

fn sh_pod(name: &str, script: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                 "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}]}
    })
}

/// Starts pod `sleeper` with `volume` at `/scratch` (whose host side is `host_dir`), waits until
/// it runs and returns the pid its process wrote there.
async fn start_sleeper(
    tc: &TestCluster,
    ns: &str,
    volume: serde_json::Value,
    host_dir: std::path::PathBuf,
) -> u32 {
    let mut pod = sh_pod("sleeper", "echo $$$$ > /scratch/pid; exec sleep 1000");
    pod["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "scratch", "mountPath": "/scratch"}]);
    let mut v = volume;
    v["name"] = json!("scratch");
    pod["spec"]["volumes"] = json!([v]);
    tc.create_pod(ns, pod).await.unwrap();
    tc.wait_phase(ns, "sleeper", &["Running"], T).await.unwrap();
    let pid_file = host_dir.join("pid");
    kontrast_tests::wait::until("pid file", T, Duration::from_millis(100), || {
        let f = pid_file.clone();
        async move {
            std::fs::read_to_string(f)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_comes_up_reports_v1_20_2_and_its_node_is_ready() {
    let tc = start("version").await;
    let v = tc.client.apiserver_version().await.unwrap();
    assert_eq!(v.git_version, "v1.20.2");
    let node = Api::<Node>::all(tc.client.clone())
        .get("kontrast-node")
        .await
        .unwrap();
    assert!(kontrast_tests::node::registration::is_ready_and_untainted(
        &node
    ));
    let state = kontrast_tests::ClusterState::load(&tc.cluster.state.state_dir).unwrap();
    let names: Vec<_> = state.processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kontrast-node",
            "prometheus"
        ]
    );
    assert!(
        state
            .processes
            .iter()
            .all(kontrast_tests::process::is_running)
    );
    tc.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_a_command_succeeds_with_its_exit_code_and_termination_message() {
    let tc = start("succeeds").await;
    let ns = tc.namespace("t").await.unwrap();
    tc.create_pod(
        &ns,
        sh_pod("ok", "echo trained > /dev/termination-log; echo to-the-log"),
    )
    .await
    .unwrap();
    let p = tc
        .wait_phase(&ns, "ok", &["Succeeded", "Failed"], T)
        .await
        .unwrap();
    assert_eq!(phase(&p), Some("Succeeded"));
    assert_eq!(terminated(&p), Some((0, "trained\n".to_string())));
    let log =
        std::fs::read_to_string(tc.cluster.state.pod_dir(&ns, "ok").join("logs/main.log")).unwrap();
    assert_eq!(log, "to-the-log\n");
    tc.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_reach_the_pod_log_through_the_apiserver() {
    let tc = start("logs").await;
    let ns = tc.namespace("t").await.unwrap();
    tc.create_pod(
        &ns,
        sh_pod("talker", "echo epoch 1; echo epoch 2; echo epoch 3"),
    )
    .await
    .unwrap();
    tc.wait_phase(&ns, "talker", &["Succeeded"], T)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(tc.client.clone(), &ns);
    assert_eq!(
        pods.logs("talker", &LogParams::default()).await.unwrap(),
        "epoch 1\nepoch 2\nepoch 3\n"
    );
    let tail = LogParams {
        tail_lines: Some(1),
        ..LogParams::default()
    };
    assert_eq!(pods.logs("talker", &tail).await.unwrap(), "epoch 3\n");
    let err = pods
        .logs(
            "talker",
            &LogParams {
                container: Some("nope".into()),
                ..LogParams::default()
            },
        )
        .await;
    assert!(
        err.is_err(),
        "an unknown container is an error, not an empty log"
    );
    tc.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_ends_failed_with_its_exit_code() {
    let tc = start("fails").await;
    let ns = tc.namespace("t").await.unwrap();
    tc.create_pod(
        &ns,
        sh_pod(
            "bad",
            "echo 'dataset missing' > /dev/termination-log; exit 3",
        ),
    )
    .await
    .unwrap();
    let p = tc
        .wait_phase(&ns, "bad", &["Succeeded", "Failed"], T)
        .await
        .unwrap();
    assert_eq!(phase(&p), Some("Failed"));
    assert_eq!(terminated(&p), Some((3, "dataset missing\n".to_string())));
    // A program that does not exist fails like a container that cannot start.
    let mut missing = sh_pod("missing", "");
    missing["spec"]["containers"][0]["command"] = json!(["no-such-program-here"]);
    tc.create_pod(&ns, missing).await.unwrap();
    let p = tc
        .wait_phase(&ns, "missing", &["Succeeded", "Failed"], T)
        .await
        .unwrap();
    let (code, message) = terminated(&p).unwrap();
    assert_eq!((phase(&p), code), (Some("Failed"), 128));
    assert!(message.contains("no-such-program-here"), "{message}");
    tc.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_pod_kills_its_process() {
    let tc = start("delete").await;
    let ns = tc.namespace("t").await.unwrap();
    let scratch = tc
        .cluster
        .state
        .pod_dir(&ns, "sleeper")
        .join("volumes/scratch");
    let pid = start_sleeper(&tc, &ns, json!({"emptyDir": {}}), scratch).await;
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the pod's process runs"
    );
    let pods: Api<Pod> = Api::namespaced(tc.client.clone(), &ns);
    pods.delete("sleeper", &DeleteParams::default())
        .await
        .unwrap();
    kontrast_tests::wait::until("pod removal", T, Duration::from_millis(100), || {
        let pods = pods.clone();
        async move { matches!(pods.get_opt("sleeper").await, Ok(None)).then_some(()) }
    })
    .await
    .unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} survived its pod"
    );
    tc.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_get_distinct_ips_and_both_bind_the_same_port() {
    let tc = start("ports").await;
    let ns = tc.namespace("t").await.unwrap();
    for name in ["web-a", "web-b"] {
        let mut pod = sh_pod(
            name,
            &format!(
                "echo $POD_NAME > index.html && exec {} -m http.server 29500 --bind $POD_IP",
                python()
            ),
        );
        pod["spec"]["containers"][0]["env"] = json!([
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ]);
        tc.create_pod(&ns, pod).await.unwrap();
    }
    let mut ips = Vec::new();
    for name in ["web-a", "web-b"] {
        let p = tc.wait_phase(&ns, name, &["Running"], T).await.unwrap();
        let ip = pod_ip(&p).unwrap();
        let body =
            kontrast_tests::wait::until("http answer", T, Duration::from_millis(200), || {
                let url = format!("http://{ip}:29500/index.html");
                async move { reqwest::get(url).await.ok()?.text().await.ok() }
            })
            .await
            .unwrap();
        assert_eq!(body.trim(), name, "each pod answers on its own address");
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1]);
    tc.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_resolves_a_sibling_through_the_headless_service_name() {
    let tc = start("dns").await;
    let ns = tc.namespace("t").await.unwrap();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "workers"},
        "spec": {"clusterIP": "None", "selector": {"app": "w"}, "ports": [{"port": 29500}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(tc.client.clone(), &ns)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let fqdn = format!("rank-0.workers.{ns}.svc.cluster.local");
    let mut r1 = sh_pod(
        "rank-1",
        &format!(
            "until getent hosts {fqdn}; do sleep 0.2; done; getent hosts {fqdn} | cut -d' ' -f1 > /dev/termination-log; \
         getent hosts rank-0.workers >> /dev/termination-log"
        ),
    );
    r1["spec"]["hostname"] = json!("rank-1");
    r1["spec"]["subdomain"] = json!("workers");
    tc.create_pod(&ns, r1).await.unwrap();
    let mut r0 = sh_pod("rank-0", "exec sleep 1000");
    r0["spec"]["hostname"] = json!("rank-0");
    r0["spec"]["subdomain"] = json!("workers");
    tc.create_pod(&ns, r0).await.unwrap();
    let p0 = tc.wait_phase(&ns, "rank-0", &["Running"], T).await.unwrap();
    let p1 = tc
        .wait_phase(&ns, "rank-1", &["Succeeded", "Failed"], T)
        .await
        .unwrap();
    let (code, message) = terminated(&p1).unwrap();
    assert_eq!(code, 0, "{message}");
    let mut lines = message.lines();
    assert_eq!(
        lines.next(),
        pod_ip(&p0).as_deref(),
        "the FQDN resolves to rank-0's pod IP"
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with(&pod_ip(&p0).unwrap())),
        "the short name resolves too: {message}"
    );
    tc.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_to_completion_through_the_job_controller() {
    let tc = start("job").await;
    let ns = tc.namespace("t").await.unwrap();
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "count"},
        "spec": {"completions": 3, "parallelism": 2, "backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "sleep 0.5; echo ok"]}]
        }}}
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(tc.client.clone(), &ns);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let done = kontrast_tests::wait::until("job completion", T, Duration::from_millis(250), || {
        let jobs = jobs.clone();
        async move {
            jobs.get("count")
                .await
                .ok()
                .filter(|j| j.status.as_ref().and_then(|s| s.succeeded) == Some(3))
        }
    })
    .await
    .unwrap();
    let conditions = done.status.unwrap().conditions.unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True"),
        "{conditions:?}"
    );
    let pods = Api::<Pod>::namespaced(tc.client.clone(), &ns)
        .list(&ListParams::default().labels("job-name=count"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 3);
    assert!(pods.items.iter().all(|p| phase(p) == Some("Succeeded")));
    tc.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_discovers_and_scrapes_an_annotated_pod() {
    let tc = start("prometheus").await;
    let ns = tc.namespace("t").await.unwrap();
    let script = format!(
        "printf 'kontrast_probe_value 42\\n' > metrics && exec {} -m http.server 9400 --bind $POD_IP",
        python()
    );
    let mut pod = sh_pod("exporter", &script);
    pod["metadata"]["labels"] = json!({"kontrast.dev/run": "demo", "kontrast.dev/node-rank": "0"});
    pod["metadata"]["annotations"] = json!({"prometheus.io/scrape": "true", "prometheus.io/port": "9400", "prometheus.io/path": "/metrics"});
    pod["spec"]["containers"][0]["env"] =
        json!([{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]);
    tc.create_pod(&ns, pod).await.unwrap();
    tc.wait_phase(&ns, "exporter", &["Running"], T)
        .await
        .unwrap();
    let prom = tc.cluster.state.prometheus();
    let sample =
        kontrast_tests::wait::until("the scraped series", T, Duration::from_millis(500), || {
            let prom = prom.clone();
            async move {
                prom.query("kontrast_probe_value")
                    .await
                    .ok()?
                    .into_iter()
                    .next()
            }
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}; targets: {:?}",
                futures::executor::block_on(prom.targets())
            )
        });
    assert_eq!(sample.number(), 42.0);
    assert_eq!(sample.metric["namespace"], ns);
    assert_eq!(sample.metric["pod"], "exporter");
    assert_eq!(sample.metric["run"], "demo");
    assert_eq!(sample.metric["node_rank"], "0");
    tc.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_maps_and_the_downward_api_reach_the_container() {
    let tc = start("config").await;
    let ns = tc.namespace("t").await.unwrap();
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "run-config"}, "data": {"config.json": "{\"epochs\":2}", "mode": "train"}})).unwrap();
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(tc.client.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let mut pod = sh_pod(
        "reader",
        "echo \"$(cat /etc/kontrast/config.json) $MODE $RANK $(hostname)\" > /dev/termination-log",
    );
    pod["metadata"]["labels"] = json!({"kontrast.dev/node-rank": "1"});
    pod["spec"]["containers"][0]["env"] = json!([
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "run-config", "key": "mode"}}},
        {"name": "RANK", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['kontrast.dev/node-rank']"}}},
    ]);
    pod["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "cfg", "mountPath": "/etc/kontrast", "readOnly": true}]);
    pod["spec"]["volumes"] = json!([{"name": "cfg", "configMap": {"name": "run-config"}}]);
    tc.create_pod(&ns, pod).await.unwrap();
    let p = tc
        .wait_phase(&ns, "reader", &["Succeeded", "Failed"], T)
        .await
        .unwrap();
    assert_eq!(
        terminated(&p),
        Some((0, "{\"epochs\":2} train 1 reader\n".to_string()))
    );
    tc.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_an_unsupported_volume_fails_naming_the_volume() {
    let tc = start("volume").await;
    let ns = tc.namespace("t").await.unwrap();
    let mut pod = sh_pod("nfs", "true");
    pod["spec"]["volumes"] = json!([{"name": "shared", "nfs": {"server": "nas", "path": "/x"}}]);
    tc.create_pod(&ns, pod).await.unwrap();
    let p = tc
        .wait_phase(&ns, "nfs", &["Succeeded", "Failed"], T)
        .await
        .unwrap();
    let status = p.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("UnsupportedVolume"));
    assert!(status.message.unwrap_or_default().contains("\"shared\""));
    tc.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_cluster_kills_the_processes_of_running_pods() {
    let tc = start("shutdown").await;
    let ns = tc.namespace("t").await.unwrap();
    tc.create_claim(&ns, "data").await.unwrap();
    let claim = tc.cluster.state.claim_dir(&ns, "data");
    let pid = start_sleeper(
        &tc,
        &ns,
        json!({"persistentVolumeClaim": {"claimName": "data"}}),
        claim,
    )
    .await;
    tc.finish();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} outlived the cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_run_side_by_side_on_separate_addresses() {
    let (a, b) = tokio::join!(start("side-a"), start("side-b"));
    assert_ne!(a.cluster.state.host, b.cluster.state.host);
    for tc in [&a, &b] {
        assert_eq!(
            tc.client.apiserver_version().await.unwrap().git_version,
            "v1.20.2"
        );
    }
    a.finish();
    b.finish();
}
