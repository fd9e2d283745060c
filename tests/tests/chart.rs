//! The Helm chart (`charts/kontrast`) and the images (`docker/`), checked with the real tools:
//! helm lint/template, kubernetes-validate against the Kubernetes 1.20 schemas, promtool on the
//! alert rules (syntax and unit tests), hadolint on the Dockerfiles. Dashboards and alerts may use
//! only the metrics of `docs/metrics.md`; the operator's RBAC must be exactly what its code calls;
//! and the chart, installed with helm onto the local 1.20 cluster, runs the real operator binary
//! under its own ServiceAccount through a whole run, while that cluster's RBAC authorizer refuses
//! the ServiceAccount everything it does not need (Secrets above all), the operator's endpoint
//! refuses writes, and no Secret shows in its log, metrics, status or events.
//!
//! The tools come from the set-up (`scripts/setup.sh`): helm in `$KONTRAST_CACHE/tools/bin`,
//! hadolint and kubernetes-validate in the project's virtualenv, promtool from Debian's
//! prometheus. A missing tool fails the test and names the script that installs it.
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kontrast_api::labels;
use kontrast_api::v1alpha1::{ContrastiveRun, RunPhase};
use kontrast_operator::objects::pod_security::restricted_violations;
use kontrast_tests::cluster::cache_dir;
use kontrast_tests::dashboards;
use kontrast_tests::testing::TestCluster;
use kontrast_tests::wait;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Paths and tools

fn repo() -> PathBuf {
    kontrast_tests::chart::repo_root()
}

fn chart() -> PathBuf {
    kontrast_tests::chart::chart_dir()
}

/// The values file that turns every optional object on and scopes RBAC to one namespace.
fn all_on_values() -> PathBuf {
    chart().join("ci/monitoring-namespace-values.yaml")
}

/// A tool at a fixed place, or a panic that says how to get it.
fn tool_at(path: PathBuf, installer: &str) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is missing: run {installer} (or scripts/setup.sh)",
        path.display()
    );
    path
}

fn venv_bin(name: &str) -> PathBuf {
    tool_at(
        cache_dir().join("venv/bin").join(name),
        "scripts/setup-python.sh",
    )
}

fn promtool() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .expect("promtool is not on PATH: scripts/setup-packages.sh installs Debian's prometheus")
}

/// Runs `cmd` and returns its output, whatever the exit status.
fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns stdout.
fn run_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch directory under the target directory, removed when the test passes and kept for a
/// look when it fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("chart")
            .join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Self(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// helm's configuration, caches and data of these tests, under the target directory.
fn helm_home() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chart/helm-home")
}

/// helm with its configuration, caches and data under the target directory, so tests neither
/// read nor write the user's (lint, template and install of a local chart write nothing there).
fn helm_cmd() -> Command {
    kontrast_tests::chart::helm_command(&helm_home()).unwrap_or_else(|e| panic!("{e}"))
}

/// `helm template` of the chart as release `kontrast` in `kontrast-system`, with `args` added.
fn template_cmd(args: &[&str]) -> Command {
    let mut cmd = helm_cmd();
    cmd.args(["template", "kontrast"])
        .arg(chart())
        .args(["--namespace", "kontrast-system"])
        .args(args);
    cmd
}

fn template(args: &[&str]) -> String {
    run_ok(&mut template_cmd(args))
}

const MONITORING_API: [&str; 2] = ["--api-versions", "monitoring.coreos.com/v1"];

/// Every document of a YAML stream, as JSON values. Parsed by PyYAML in the project's virtualenv
/// (a dependency of kubernetes-validate), so the tests read YAML the way a YAML 1.1 tool does.
fn yaml_docs(yaml: &str) -> Vec<Value> {
    const PY: &str = "import json, sys, yaml\n\
        json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout, default=str)";
    let mut child = Command::new(venv_bin("python"))
        .args(["-c", PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the venv's python");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(yaml.as_bytes())
        .expect("writing YAML to python");
    let out = child.wait_with_output().expect("python finishes");
    assert!(out.status.success(), "YAML does not parse:\n{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("python wrote JSON")
}

fn render(args: &[&str]) -> Vec<Value> {
    yaml_docs(&template(args))
}

fn kind_of(doc: &Value) -> (&str, &str) {
    (
        doc["kind"].as_str().unwrap_or_default(),
        doc["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind_of(d) == (kind, name))
        .unwrap_or_else(|| {
            let all: Vec<_> = docs.iter().map(kind_of).collect();
            panic!("no {kind} {name} rendered; got {all:?}")
        })
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter().map(|d| kind_of(d).0.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Lint, schema validation, CRD

#[test]
fn helm_lint_passes_with_the_default_values() {
    run_ok(helm_cmd().args(["lint", "--strict"]).arg(chart()));
}

#[test]
fn helm_lint_passes_with_every_option_on_and_namespace_scope() {
    run_ok(
        helm_cmd()
            .args(["lint", "--strict"])
            .arg(chart())
            .arg("-f")
            .arg(all_on_values()),
    );
}

#[test]
fn the_rendered_manifests_are_valid_kubernetes_1_20_and_1_28_objects() {
    let validate = venv_bin("kubernetes-validate");
    let dir = Scratch::new("validate");
    let all_on = all_on_values();
    let all_on = all_on.to_str().expect("a UTF-8 path");
    let variants: [(&str, Vec<&str>); 2] = [
        ("default", MONITORING_API.to_vec()),
        ("all-on", [&MONITORING_API[..], &["-f", all_on]].concat()),
    ];
    for (name, args) in variants {
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, template(&args)).expect("writing the manifests");
        // 1.20 is the local test cluster, 1.28 the newest this kubernetes-validate knows; strict
        // mode rejects fields a version does not have (the schema skew that breaks applies).
        for version in ["1.20.0", "1.28.0"] {
            let out = output(
                Command::new(&validate)
                    .args(["--strict", "-k", version])
                    .arg(&file),
            );
            let report = text(&out);
            assert!(
                out.status.success(),
                "{name} manifests are not valid Kubernetes {version}:\n{report}"
            );
            // Only the Prometheus Operator's kinds may lack a schema; everything else is checked.
            for line in report.lines().filter(|l| l.starts_with("WARN")) {
                assert!(
                    line.contains("monitoring.coreos.com/v1"),
                    "{name}, {version}: unexpected warning: {line}"
                );
            }
            assert!(report.contains("passed for resource deployment/kontrast"));
        }
    }
}

#[test]
fn the_monitoring_objects_render_only_where_the_prometheus_operator_api_exists() {
    let all_on = all_on_values();
    let all_on = all_on.to_str().expect("a UTF-8 path");
    let with = kinds(&render(&[&MONITORING_API[..], &["-f", all_on]].concat()));
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        assert!(with.contains(kind), "{kind} missing: {with:?}");
    }
    let without = kinds(&render(&["-f", all_on]));
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        assert!(
            !without.contains(kind),
            "{kind} rendered without the monitoring.coreos.com/v1 API, so the install would fail"
        );
    }
    // Dashboards are plain ConfigMaps and need no Prometheus Operator.
    assert!(without.contains("ConfigMap"));
    // The defaults create no monitoring object at all.
    let defaults = kinds(&render(&MONITORING_API));
    assert!(
        !defaults.contains("ServiceMonitor") && !defaults.contains("ConfigMap"),
        "{defaults:?}"
    );
}

#[test]
fn the_chart_ships_the_generated_crd_unchanged() {
    let top = repo().join("crds/contrastiverun.yaml");
    let shipped = chart().join("crds/contrastiverun.yaml");
    let a = std::fs::read(&top).expect("reading crds/contrastiverun.yaml");
    let b = std::fs::read(&shipped).expect("reading the chart's CRD");
    assert!(
        a == b,
        "{} differs from {}: copy it (cp crds/contrastiverun.yaml charts/kontrast/crds/)",
        shipped.display(),
        top.display()
    );
}

#[test]
fn the_values_schema_rejects_bad_values() {
    // Each is a mistake a user could make; each must stop lint and template with the schema's
    // word for it, not render something wrong.
    let bad: [(&str, &str); 8] = [
        ("rbac.scope=cluster-wide", "rbac.scope"),
        ("replicaCount=-1", "replicaCount"),
        ("monitoring.serviceMonitor.enabled=yes", "enabled"),
        ("monitoring.podMonitor.interval=soon", "interval"),
        (
            "monitoring.prometheusRule.throughputDropRatio=2",
            "throughputDropRatio",
        ),
        ("operator.logFormat=xml", "logFormat"),
        ("metrics.port=70000", "port"),
        ("rbac.scopes=namespace", "scopes"),
    ];
    for (set, field) in bad {
        for verb in ["lint", "template"] {
            let out = output(helm_cmd().arg(verb).arg(chart()).args(["--set", set]));
            let report = text(&out);
            assert!(
                !out.status.success() || report.contains("[ERROR]"),
                "helm {verb} accepted --set {set}:\n{report}"
            );
            assert!(
                report.contains("schema") && report.contains(field),
                "helm {verb} --set {set} failed, but not on the schema ({field}):\n{report}"
            );
        }
    }
    // More replicas than one without leader election would reconcile every run twice.
    let out = output(&mut template_cmd(&[
        "--set",
        "replicaCount=2",
        "--set",
        "leaderElection.enabled=false",
    ]));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("leaderElection.enabled"),
        "{}",
        text(&out)
    );
    // And good values pass.
    template(&["--set", "rbac.scope=namespace", "--set", "replicaCount=3"]);
}

#[test]
fn the_dockerfiles_pass_hadolint() {
    let hadolint = venv_bin("hadolint");
    for file in ["docker/operator.Dockerfile", "docker/worker.Dockerfile"] {
        run_ok(Command::new(&hadolint).arg(repo().join(file)));
    }
}

// ---------------------------------------------------------------------------------------------
// RBAC

/// (API group, resource, verb) the operator needs on the runs' objects, from its code. Objects
/// are written by server-side apply, a PATCH that the API server authorises as "create" too when
/// the object does not exist yet (the install test below fails without it).
const OPERATOR_RULES: &[(&str, &str, &str)] = &[
    // controller::run: Controller::new(runs) watches ContrastiveRuns (list + watch).
    ("kontrast.dev", "contrastiveruns", "list"),
    ("kontrast.dev", "contrastiveruns", "watch"),
    // Run::save_status: patch_status with server-side apply.
    ("kontrast.dev", "contrastiveruns/status", "patch"),
    // owns(pods), Run::worker_pods and eval_pod_message list; apply creates and updates;
    // Run::delete_pods deletes.
    ("", "pods", "create"),
    ("", "pods", "delete"),
    ("", "pods", "list"),
    ("", "pods", "patch"),
    ("", "pods", "watch"),
    // owns(svcs)/owns(cms); the run's Service and ConfigMap are applied.
    ("", "services", "create"),
    ("", "services", "list"),
    ("", "services", "patch"),
    ("", "services", "watch"),
    ("", "configmaps", "create"),
    ("", "configmaps", "list"),
    ("", "configmaps", "patch"),
    ("", "configmaps", "watch"),
    // owns(jobs); Run::evaluate gets each evaluation Job and applies missing ones.
    ("batch", "jobs", "create"),
    ("batch", "jobs", "get"),
    ("batch", "jobs", "list"),
    ("batch", "jobs", "patch"),
    ("batch", "jobs", "watch"),
    // kube-runtime's Recorder: events.k8s.io/v1 Events, created, then patched for repeats.
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
    // objects::pod_group: the gang scheduler's PodGroup, applied (rbac.gangSchedulers).
    ("scheduling.volcano.sh", "podgroups", "create"),
    ("scheduling.volcano.sh", "podgroups", "patch"),
    ("scheduling.x-k8s.io", "podgroups", "create"),
    ("scheduling.x-k8s.io", "podgroups", "patch"),
];

/// The kinds the operator builds an `Api<…>` for, and the `Api` methods it calls. When either
/// changes, OPERATOR_RULES above and `kontrast.operatorRules` in the chart need a look.
const OPERATOR_API_KINDS: &[&str] = &[
    "ConfigMap",
    "ContrastiveRun",
    "DynamicObject",
    "Job",
    "K",
    "Lease",
    "Pod",
    "Service",
];
const OPERATOR_API_METHODS: &[&str] = &[
    "create",
    "delete",
    "get_opt",
    "patch",
    "patch_status",
    "replace",
];

/// Every (group, resource, verb) a list of PolicyRules grants, with resourceNames (if any).
fn grants(rules: &Value) -> BTreeSet<(String, String, String, Vec<String>)> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for rule in rules.as_array().expect("rules is a list") {
        let mut names = strings(&rule["resourceNames"]);
        names.sort();
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    out.insert((g.clone(), r.clone(), v, names.clone()));
                }
            }
        }
    }
    out
}

fn expected_operator_grants(gang: bool) -> BTreeSet<(String, String, String, Vec<String>)> {
    OPERATOR_RULES
        .iter()
        .filter(|(g, _, _)| gang || !g.starts_with("scheduling."))
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string(), vec![]))
        .collect()
}

fn assert_same_grants(
    what: &str,
    got: BTreeSet<(String, String, String, Vec<String>)>,
    want: BTreeSet<(String, String, String, Vec<String>)>,
) {
    let extra: Vec<_> = got.difference(&want).collect();
    let missing: Vec<_> = want.difference(&got).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: grants beyond what the operator calls: {extra:?}; missing: {missing:?}"
    );
}

/// Identifiers following `prefix` in the operator's sources, e.g. the `Pod` of `Api<Pod>`.
fn scan_operator(prefix: &str, terminators: &[char]) -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir)
            .expect("reading operator/src")
            .flatten()
        {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("operator/src"), &mut files);
    let mut found = BTreeSet::new();
    for f in files {
        let src = std::fs::read_to_string(&f).expect("reading an operator source");
        for (i, _) in src.match_indices(prefix) {
            let rest = &src[i + prefix.len()..];
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let after = rest[ident.len()..].chars().next();
            if !ident.is_empty() && after.is_some_and(|c| terminators.contains(&c)) {
                found.insert(ident);
            }
        }
    }
    found
}

#[test]
fn the_operator_still_uses_the_apis_the_rbac_was_derived_from() {
    let kinds = scan_operator("Api<", &['>', ':', ',']);
    let want: BTreeSet<String> = OPERATOR_API_KINDS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        kinds, want,
        "the operator's Api<…> kinds changed: update OPERATOR_RULES here and kontrast.operatorRules in charts/kontrast/templates/_helpers.tpl"
    );
    let vocabulary = [
        "create",
        "delete",
        "delete_collection",
        "evict",
        "get_metadata",
        "get_opt",
        "get_status",
        "list_metadata",
        "patch",
        "patch_metadata",
        "patch_status",
        "patch_subresource",
        "replace",
        "replace_status",
        "replace_subresource",
        "watch_metadata",
    ];
    let methods: BTreeSet<String> = scan_operator(".", &['('])
        .into_iter()
        .filter(|m| vocabulary.contains(&m.as_str()))
        .collect();
    let want: BTreeSet<String> = OPERATOR_API_METHODS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        methods, want,
        "the operator calls other kube::Api methods now: update OPERATOR_RULES here and kontrast.operatorRules in the chart"
    );
}

#[test]
fn the_operator_rbac_is_exactly_what_the_operator_calls() {
    // Cluster scope: a ClusterRole and its binding to the operator's ServiceAccount.
    let docs = render(&[]);
    let role = find(&docs, "ClusterRole", "kontrast");
    assert_same_grants(
        "ClusterRole kontrast",
        grants(&role["rules"]),
        expected_operator_grants(true),
    );
    let binding = find(&docs, "ClusterRoleBinding", "kontrast");
    assert_eq!(binding["roleRef"]["name"], "kontrast");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "kontrast", "namespace": "kontrast-system"}])
    );
    assert!(
        docs.iter().all(|d| kind_of(d) != ("Role", "kontrast")),
        "cluster scope needs no namespaced Role for the runs' objects"
    );

    // The Lease: create anywhere in the release namespace, read and renew only its own.
    let lease_role = find(&docs, "Role", "kontrast-leader-election");
    assert_eq!(lease_role["metadata"]["namespace"], "kontrast-system");
    let lease = |v: &str, names: &[&str]| {
        (
            "coordination.k8s.io".to_string(),
            "leases".to_string(),
            v.to_string(),
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_same_grants(
        "Role kontrast-leader-election",
        grants(&lease_role["rules"]),
        [
            lease("create", &[]),
            lease("get", &["kontrast"]),
            lease("update", &["kontrast"]),
        ]
        .into(),
    );
    let deployment = find(&docs, "Deployment", "kontrast");
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .is_some_and(|a| a.contains(&json!("--lease-name=kontrast"))),
        "{args}"
    );

    // Namespace scope: the same rules in a Role of the watched namespace, and no ClusterRole for
    // the operator; without gang schedulers, no PodGroup rule.
    let docs = render(&[
        "--set",
        "rbac.scope=namespace",
        "--set",
        "rbac.watchNamespace=ml",
        "--set",
        "rbac.gangSchedulers=false",
    ]);
    let role = find(&docs, "Role", "kontrast");
    assert_eq!(role["metadata"]["namespace"], "ml");
    assert_same_grants(
        "Role kontrast",
        grants(&role["rules"]),
        expected_operator_grants(false),
    );
    let binding = find(&docs, "RoleBinding", "kontrast");
    assert_eq!(binding["metadata"]["namespace"], "ml");
    assert_eq!(binding["subjects"][0]["namespace"], "kontrast-system");
    assert!(
        docs.iter()
            .all(|d| kind_of(d) != ("ClusterRole", "kontrast")
                && kind_of(d).0 != "ClusterRoleBinding"),
        "namespace scope grants nothing cluster-wide"
    );
    let args =
        &find(&docs, "Deployment", "kontrast")["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .is_some_and(|a| a.contains(&json!("--namespace=ml"))),
        "{args}"
    );
}

#[test]
fn users_get_contrastiveruns_through_the_aggregated_edit_and_view_roles() {
    let docs = render(&[]);
    let edit = find(&docs, "ClusterRole", "kontrast-edit");
    let labels = &edit["metadata"]["labels"];
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-admin"],
        "true"
    );
    let g = grants(&edit["rules"]);
    for verb in [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ] {
        assert!(
            g.contains(&(
                "kontrast.dev".into(),
                "contrastiveruns".into(),
                verb.into(),
                vec![]
            )),
            "edit lacks {verb}"
        );
    }
    assert!(
        !g.iter().any(|(_, r, v, _)| r == "contrastiveruns/status"
            && !["get", "list", "watch"].contains(&v.as_str())),
        "users must not write the operator's status"
    );
    let view = find(&docs, "ClusterRole", "kontrast-view");
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    let verbs: BTreeSet<String> = grants(&view["rules"]).into_iter().map(|t| t.2).collect();
    assert_eq!(verbs, ["get", "list", "watch"].map(String::from).into());
    // They can be left out (the operator's own ClusterRole stays).
    let off = render(&["--set", "rbac.aggregateToDefaultRoles=false"]);
    let cluster_roles: Vec<&str> = off
        .iter()
        .filter(|d| kind_of(d).0 == "ClusterRole")
        .map(|d| kind_of(d).1)
        .collect();
    assert_eq!(cluster_roles, ["kontrast"]);
}

// ---------------------------------------------------------------------------------------------
// The Deployment

#[test]
fn the_operator_deployment_meets_the_restricted_pod_security_standard() {
    let all_on = all_on_values();
    for args in [vec![], vec!["-f", all_on.to_str().expect("a UTF-8 path")]] {
        let docs = render(&args);
        let pod = &find(&docs, "Deployment", "kontrast")["spec"]["template"]["spec"];
        let violations = restricted_violations(pod);
        assert!(violations.is_empty(), "{args:?}: {violations:?}");
    }
    // The check itself catches what it should.
    let bad = json!({"hostNetwork": true, "containers": [{"name": "c", "securityContext": {"privileged": true}}]});
    assert!(restricted_violations(&bad).len() >= 6);
}

#[test]
fn the_operator_deployment_matches_the_operators_flags_and_endpoints() {
    let docs = render(&["--set", "metrics.port=9443"]);
    let deployment = find(&docs, "Deployment", "kontrast");
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(pod["serviceAccountName"], "kontrast");
    assert_eq!(c["command"], json!(["kontrast-operator"]));
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--metrics-addr=0.0.0.0:9443"), "{args:?}");
    assert!(args.contains(&"--leader-elect"), "{args:?}");
    assert!(args.contains(&"--log-format=json"), "{args:?}");
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "cluster scope watches every namespace: {args:?}"
    );
    // Every flag is one the operator defines (operator/src/main.rs).
    let main = std::fs::read_to_string(repo().join("operator/src/main.rs")).expect("main.rs");
    for a in &args {
        let flag = a
            .trim_start_matches("--")
            .split('=')
            .next()
            .unwrap_or_default();
        let field = flag.replace('-', "_");
        assert!(
            main.contains(&format!("    {field}: ")),
            "--{flag} is not a flag of kontrast-operator"
        );
    }
    // POD_NAMESPACE is the Lease namespace and POD_NAME the identity (operator/src/main.rs).
    let env = c["env"].as_array().expect("env");
    for (name, path) in [
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_NAME", "metadata.name"),
    ] {
        assert!(
            main.contains(&format!("env = \"{name}\"")),
            "the operator reads {name}"
        );
        assert!(
            env.iter()
                .any(|e| e["name"] == name && e["valueFrom"]["fieldRef"]["fieldPath"] == path),
            "{name} from {path}: {env:?}"
        );
    }
    // Probes on the endpoints operator/src/http.rs serves, on the port the flag binds.
    let http = std::fs::read_to_string(repo().join("operator/src/http.rs")).expect("http.rs");
    assert_eq!(c["ports"][0]["containerPort"], 9443);
    assert_eq!(c["ports"][0]["name"], "http-metrics");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path);
        assert_eq!(c[probe]["httpGet"]["port"], "http-metrics");
        assert!(
            http.contains(&format!(".route(\"{path}\"")),
            "{path} is served"
        );
    }
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    let svc = find(&docs, "Service", "kontrast-metrics");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http-metrics");
    assert_eq!(
        svc["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    // The operator's selector must never match worker pods, which carry app.kubernetes.io/name
    // and /instance too (operator/src/objects/mod.rs).
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "operator"
    );
}

// ---------------------------------------------------------------------------------------------
// Monitoring: PodMonitor labels, alert rules, dashboards

fn quickstart_run() -> ContrastiveRun {
    let text = std::fs::read_to_string(repo().join("examples/quickstart.yaml"))
        .expect("reading examples/quickstart.yaml");
    let mut doc = yaml_docs(&text).remove(0);
    doc["metadata"]["namespace"] = json!("ml");
    doc["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000000");
    serde_json::from_value(doc).expect("the quickstart is a ContrastiveRun")
}

#[test]
fn the_pod_monitor_scrapes_the_worker_pods_the_operator_builds() {
    let docs = render(
        &[
            &MONITORING_API[..],
            &["--set", "monitoring.podMonitor.enabled=true"],
        ]
        .concat(),
    );
    let pm = find(&docs, "PodMonitor", "kontrast-workers");
    let run = quickstart_run();
    let config = run.spec.resolve().expect("the quickstart resolves");
    let pod = serde_json::to_value(kontrast_operator::objects::pod::build(&run, &config, 1, 0))
        .expect("a pod serialises");
    let pod_labels = &pod["metadata"]["labels"];
    for (k, v) in pm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            &pod_labels[k], v,
            "the PodMonitor selects worker pods by {k}"
        );
    }
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    let ports = pod["spec"]["containers"][0]["ports"]
        .as_array()
        .expect("ports");
    assert!(
        ports.iter().any(|p| p["name"] == endpoint["port"]),
        "the worker container names its metrics port {}: {ports:?}",
        endpoint["port"]
    );
    assert_eq!(
        endpoint["path"],
        pod["metadata"]["annotations"][labels::SCRAPE_PATH]
    );
    // The worker's own run and rank labels must survive the target's.
    assert_eq!(endpoint["honorLabels"], true);
    assert_eq!(pm["spec"]["namespaceSelector"], json!({"any": true}));

    // Prometheus turns pod label kontrast.dev/node-rank into
    // __meta_kubernetes_pod_label_kontrast_dev_node_rank; the labelmap must then give the same
    // series label as kontrast_api::labels::series_label (which the local cluster's discovery
    // and the dashboards use).
    let relabelings = endpoint["relabelings"].as_array().expect("relabelings");
    let labelmap = relabelings
        .iter()
        .find(|r| r["action"] == "labelmap")
        .expect("a labelmap relabeling");
    let prefix = "__meta_kubernetes_pod_label_kontrast_dev_";
    assert_eq!(labelmap["regex"], format!("{prefix}(.+)"));
    let meta = |label: &str| {
        let sanitized: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("__meta_kubernetes_pod_label_{sanitized}")
    };
    for key in [
        labels::RUN,
        labels::ATTEMPT,
        labels::NODE_RANK,
        labels::ROLE,
    ] {
        assert!(pod_labels.get(key).is_some(), "worker pods carry {key}");
        let mapped = meta(key).strip_prefix(prefix).map(String::from);
        assert_eq!(mapped, labels::series_label(key), "{key}");
    }
    // Only node rank 0 serves /metrics (the worker's rank 0 alone starts the server).
    let keep = relabelings
        .iter()
        .find(|r| r["action"] == "keep")
        .expect("rank-0 keep relabeling");
    assert_eq!(keep["sourceLabels"], json!([meta(labels::NODE_RANK)]));
    assert_eq!(keep["regex"], "0");

    let sm_docs = render(
        &[
            &MONITORING_API[..],
            &["--set", "monitoring.serviceMonitor.enabled=true"],
        ]
        .concat(),
    );
    let sm = find(&sm_docs, "ServiceMonitor", "kontrast");
    let svc = find(&sm_docs, "Service", "kontrast-metrics");
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(sm["spec"]["endpoints"][0]["honorLabels"], true);
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector")
    {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the Service by {k}"
        );
    }
}

/// The metric names of `docs/metrics.md`, with their types.
fn documented_metrics() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md")).expect("docs/metrics.md");
    let mut out = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| `name` | type | labels | meaning |" → ["", "`name`", "type", …]
        if cells.len() < 4 {
            continue;
        }
        let name = cells[1].trim_matches('`');
        if cells[1].starts_with('`') && name.starts_with("kontrast_") {
            out.insert(name.to_string(), cells[2].to_string());
        }
    }
    assert!(out.len() >= 20, "docs/metrics.md lists metrics: {out:?}");
    out
}

const PROMQL_FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
    // Aggregations.
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
const PROMQL_KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "atan2",
    "inf",
    "nan",
];

/// The metric names `expr` selects (PromQL, with Grafana's `$variables` allowed). Errors name
/// what is neither a metric nor a function, keyword or label.
fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    // Strings, label matchers and ranges hold label names and values, not metrics.
    let mut s = String::new();
    let mut chars = expr.chars().peekable();
    let mut depth = (0, 0);
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut escaped = false;
                for d in chars.by_ref() {
                    if d == c && !escaped {
                        break;
                    }
                    escaped = d == '\\' && !escaped;
                }
                s.push(' ');
            }
            '{' => depth.0 += 1,
            '}' => depth.0 -= 1,
            '[' => depth.1 += 1,
            ']' => depth.1 -= 1,
            _ if depth != (0, 0) => {}
            _ => s.push(c),
        }
    }
    if depth != (0, 0) {
        return Err(format!("unbalanced braces in {expr}"));
    }
    let tokens = tokenize(&s);
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let next = tokens.get(i + 1).map(String::as_str);
        let is_ident = t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':');
        if !is_ident {
            i += 1;
            continue;
        }
        if [
            "by",
            "without",
            "on",
            "ignoring",
            "group_left",
            "group_right",
        ]
        .contains(&t.as_str())
            && next == Some("(")
        {
            // A list of label names: skip to its closing parenthesis.
            while i < tokens.len() && tokens[i] != ")" {
                i += 1;
            }
        } else if next == Some("(")
            || (PROMQL_FUNCTIONS.contains(&t.as_str()) && matches!(next, Some("by" | "without")))
        {
            // A call, or an aggregation written `sum by (…) (…)`.
            if !PROMQL_FUNCTIONS.contains(&t.as_str()) {
                return Err(format!("unknown function {t} in {expr}"));
            }
        } else if !PROMQL_KEYWORDS.contains(&t.as_str()) {
            names.insert(t.clone());
        }
        i += 1;
    }
    Ok(names)
}

/// Identifiers, numbers (durations included), `$variables` and single punctuation characters.
fn tokenize(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut t = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                    t.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(t);
        } else if c.is_ascii_digit() || c == '.' || c == '$' {
            // Numbers, durations like 5m, and Grafana variables: none names a metric.
            let mut t = String::from("#");
            while let Some(&d) = chars.peek() {
                if d.is_ascii_alphanumeric() || "._${}".contains(d) {
                    t.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(t);
        } else {
            out.push(c.to_string());
            chars.next();
        }
    }
    out
}

/// Checks that `expr` selects only documented metrics (histograms with their series suffixes).
fn check_documented(
    what: &str,
    expr: &str,
    documented: &BTreeMap<String, String>,
) -> Result<BTreeSet<String>, String> {
    let names = metric_names(expr).map_err(|e| format!("{what}: {e}"))?;
    if names.is_empty() {
        return Err(format!("{what}: no metric in {expr}"));
    }
    for n in &names {
        let ok = documented.contains_key(n)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                n.strip_suffix(suffix)
                    .is_some_and(|base| documented.get(base).is_some_and(|t| t == "histogram"))
            });
        if !ok {
            return Err(format!(
                "{what}: {n} is not in docs/metrics.md (expression: {expr})"
            ));
        }
    }
    Ok(names)
}

#[test]
fn the_promql_scanner_tells_metrics_from_functions_labels_and_variables() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (run, le) (rate(a_bucket{run=~"$run", x="y}"}[$__rate_interval]))) / on (run) group_left b offset 5m and c == 1"#,
    )
    .unwrap();
    assert_eq!(names, ["a_bucket", "b", "c"].map(String::from).into());
    assert!(metric_names("nosuchfn(x)").is_err());
    let documented = documented_metrics();
    assert!(check_documented("t", "kontrast_train_step_seconds_bucket", &documented).is_ok());
    assert!(check_documented("t", "kontrast_train_loss_bucket", &documented).is_err());
    assert!(check_documented("t", "kontrast_made_up", &documented).is_err());
}

/// Every query of a dashboard: panel targets (rows' nested panels included) and variable queries.
fn dashboard_queries(name: &str, dashboard: &Value) -> Vec<(String, String)> {
    dashboards::queries(name, dashboard)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|q| {
            let what = match q.source {
                dashboards::Source::Panel { title } => format!("panel {title:?}"),
                dashboards::Source::Variable { name, .. } => format!("variable \"{name}\""),
            };
            (what, q.expr)
        })
        .collect()
}

fn dashboards() -> Vec<(String, Value)> {
    dashboards::load(&chart().join("dashboards")).unwrap_or_else(|e| panic!("{e}"))
}

/// A dashboard query with Grafana's variables replaced as Grafana does with "All" selected.
fn as_promql(expr: &str) -> String {
    dashboards::all_selected(expr)
}

/// The PrometheusRule's `spec`, rendered with `args`.
fn rule_spec(args: &[&str]) -> Value {
    let docs = render(
        &[
            &MONITORING_API[..],
            &["--set", "monitoring.prometheusRule.enabled=true"],
            args,
        ]
        .concat(),
    );
    find(&docs, "PrometheusRule", "kontrast")["spec"].clone()
}

#[test]
fn dashboards_and_alerts_use_only_documented_metrics_and_valid_promql() {
    let documented = documented_metrics();
    let mut errors = Vec::new();
    let mut used = BTreeSet::new();
    let mut syntax = Vec::new();
    for (name, dashboard) in dashboards() {
        let queries = dashboard_queries(&name, &dashboard);
        assert!(queries.len() > 5, "{name}: {} queries", queries.len());
        for (what, expr) in queries {
            match check_documented(&format!("{name} {what}"), &expr, &documented) {
                Ok(n) => used.extend(n),
                Err(e) => errors.push(e),
            }
            let promql = as_promql(&expr);
            assert!(
                !promql.contains('$'),
                "{name} {what}: unknown variable in {expr}"
            );
            syntax.push(json!({"record": format!("kontrast:dashboard_query:{}", syntax.len()), "expr": promql}));
        }
    }
    let spec = rule_spec(&[]);
    for group in spec["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            if let Err(e) = check_documented(&format!("alert {}", rule["alert"]), expr, &documented)
            {
                errors.push(e);
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // The training dashboard covers the worker's metrics the task asks for.
    for needed in [
        "kontrast_train_loss",
        "kontrast_train_learning_rate",
        "kontrast_train_epoch",
        "kontrast_train_images_per_second",
        "kontrast_train_step_data_wait_seconds_sum",
        "kontrast_train_step_seconds_sum",
        "kontrast_train_allreduce_seconds_bucket",
        "kontrast_train_gpu_memory_allocated_bytes",
        "kontrast_run_restarts",
        "kontrast_run_evaluation_result",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
    // Every dashboard query parses as PromQL (promtool checks recording rules' expressions).
    let dir = Scratch::new("dashboard-promql");
    let file = dir.join("dashboard-queries.json");
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboards", "rules": syntax}]}).to_string(),
    )
    .expect("writing the queries");
    run_ok(Command::new(promtool()).args(["check", "rules"]).arg(&file));
}

#[test]
fn the_dashboards_ship_as_sidecar_config_maps() {
    let docs = render(&[
        "--set",
        "monitoring.dashboards.enabled=true",
        "--set",
        "monitoring.dashboards.namespace=monitoring",
    ]);
    for (name, dashboard) in dashboards() {
        let cm = find(&docs, "ConfigMap", &format!("kontrast-dashboard-{name}"));
        assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(cm["metadata"]["namespace"], "monitoring");
        let key = format!("kontrast-{name}.json");
        let shipped: Value = serde_json::from_str(cm["data"][&key].as_str().expect("the JSON"))
            .expect("the ConfigMap holds the dashboard's JSON");
        assert_eq!(shipped, dashboard);
        assert_eq!(dashboard["uid"], format!("kontrast-{name}"));
    }
    // The sidecar's label is configurable.
    let docs = render(&[
        "--set",
        "monitoring.dashboards.enabled=true",
        "--set-json",
        r#"monitoring.dashboards.labels={"dashboards":"grafana"}"#,
    ]);
    let cm = find(&docs, "ConfigMap", "kontrast-dashboard-training");
    assert_eq!(cm["metadata"]["labels"]["dashboards"], "grafana");
}

/// Alert unit tests for promtool (`promtool test rules`): each alert fires on the series that
/// should raise it, and only for the affected run.
fn alert_tests(rules_file: &str) -> Value {
    let alert = |name: &str, at: &str, labels: Vec<Value>| json!({"alertname": name, "eval_time": at, "exp_alerts": labels.into_iter().map(|l| json!({"exp_labels": l})).collect::<Vec<_>>()});
    let series = |s: &str, v: &str| json!({"series": s, "values": v});
    json!({
        "rule_files": [rules_file],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    series(r#"kontrast_run_phase{namespace="ml", run="a", phase="Failed", pod="op-1"}"#, "0 0 1x10"),
                    series(r#"kontrast_run_phase{namespace="ml", run="b", phase="Failed", pod="op-1"}"#, "0x12"),
                ],
                "alert_rule_test": [
                    alert("KontrastRunFailed", "1m", vec![]),
                    alert("KontrastRunFailed", "5m", vec![json!({"severity": "critical", "namespace": "ml", "run": "a"})]),
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    series(r#"kontrast_run_restarts{namespace="ml", run="a"}"#, "0 0 1 1 2 2 2"),
                    series(r#"kontrast_run_restarts{namespace="ml", run="b"}"#, "1x6"),
                ],
                "alert_rule_test": [
                    alert("KontrastRunRestartsClimbing", "3m", vec![]),
                    alert("KontrastRunRestartsClimbing", "6m", vec![json!({"severity": "warning", "namespace": "ml", "run": "a"})]),
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    series(r#"kontrast_run_phase{namespace="ml", run="a", phase="Training"}"#, "1x30"),
                    series(r#"kontrast_run_phase{namespace="ml", run="b", phase="Training"}"#, "1x30"),
                    series(r#"kontrast_run_phase{namespace="ml", run="c", phase="Training"}"#, "0x30"),
                    series(r#"kontrast_run_progress{namespace="ml", run="a", field="step"}"#, "0+10x5 50x25"),
                    series(r#"kontrast_run_progress{namespace="ml", run="b", field="step"}"#, "0+10x30"),
                    series(r#"kontrast_run_progress{namespace="ml", run="c", field="step"}"#, "50x30"),
                ],
                "alert_rule_test": [
                    alert("KontrastRunStalled", "10m", vec![]),
                    alert("KontrastRunStalled", "25m", vec![json!({"severity": "critical", "namespace": "ml", "run": "a"})]),
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    series(r#"kontrast_run_phase{namespace="ml", run="a", phase="Training"}"#, "1x100"),
                    series(r#"kontrast_run_phase{namespace="ml", run="b", phase="Training"}"#, "1x100"),
                    series(r#"kontrast_run_progress{namespace="ml", run="a", field="images_per_second"}"#, "1000x60 100x40"),
                    series(r#"kontrast_run_progress{namespace="ml", run="b", field="images_per_second"}"#, "1000x100"),
                ],
                "alert_rule_test": [
                    alert("KontrastRunThroughputCollapse", "60m", vec![]),
                    alert("KontrastRunThroughputCollapse", "70m", vec![]),
                    alert("KontrastRunThroughputCollapse", "85m", vec![json!({"severity": "warning", "namespace": "ml", "run": "a"})]),
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    series(r#"kontrast_run_evaluation_phase{namespace="ml", run="a", evaluation="voc", phase="Failed"}"#, "0 0 1x10"),
                    series(r#"kontrast_run_evaluation_phase{namespace="ml", run="a", evaluation="knn", phase="Failed"}"#, "0x12"),
                ],
                "alert_rule_test": [
                    alert("KontrastEvaluationFailed", "1m", vec![]),
                    alert("KontrastEvaluationFailed", "5m", vec![json!({"severity": "warning", "namespace": "ml", "run": "a", "evaluation": "voc"})]),
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    series(r#"kontrast_operator_reconcile_errors_total{namespace="kontrast-system", reason="kube"}"#, "0+1x40"),
                ],
                "alert_rule_test": [
                    alert("KontrastOperatorReconcileErrors", "10m", vec![]),
                    alert("KontrastOperatorReconcileErrors", "30m", vec![json!({"severity": "warning", "namespace": "kontrast-system", "reason": "kube"})]),
                ],
            },
        ],
    })
}

#[test]
fn the_alert_rules_pass_promtool_and_fire_when_they_should() {
    let dir = Scratch::new("alerts");
    let promtool = promtool();
    let spec = rule_spec(&[]);
    let names: BTreeSet<&str> = spec["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "KontrastEvaluationFailed",
            "KontrastOperatorReconcileErrors",
            "KontrastRunFailed",
            "KontrastRunRestartsClimbing",
            "KontrastRunStalled",
            "KontrastRunThroughputCollapse",
        ]
        .into()
    );
    // The rules as Prometheus loads them: syntax, templates in annotations, durations.
    let rules = dir.join("rules.json");
    std::fs::write(&rules, spec.to_string()).expect("writing the rules");
    let out = run_ok(Command::new(&promtool).args(["check", "rules"]).arg(&rules));
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");
    // Unit tests compare labels and annotations; annotations are prose, so they are dropped from
    // the copy the unit tests load.
    let mut bare = spec.clone();
    for group in bare["groups"].as_array_mut().expect("groups") {
        for rule in group["rules"].as_array_mut().expect("rules") {
            if let Some(r) = rule.as_object_mut() {
                r.remove("annotations");
            }
        }
    }
    std::fs::write(dir.join("bare-rules.json"), bare.to_string()).expect("writing the rules");
    let tests = dir.join("alerts.test.json");
    std::fs::write(&tests, alert_tests("bare-rules.json").to_string()).expect("writing the tests");
    run_ok(
        Command::new(&promtool)
            .current_dir(&dir)
            .args(["test", "rules"])
            .arg(&tests),
    );
    // Settings reach the rules.
    let tuned = rule_spec(&[
        "--set",
        "monitoring.prometheusRule.stalledFor=30m",
        "--set",
        "monitoring.prometheusRule.alertLabels.team=ml",
    ]);
    let text = tuned.to_string();
    assert!(
        text.contains(r#"changes(kontrast_run_progress{field=\"step\"}[30m])"#),
        "{text}"
    );
    assert!(text.contains(r#""team":"ml""#), "{text}");
}

// ---------------------------------------------------------------------------------------------
// helm install on the local cluster

const T: Duration = Duration::from_secs(150);

/// The operator binary cargo built beside this test's binaries; the node runs it for the
/// chart's Deployment. It must be newer than every source it was built from, else the test would
/// exercise old code.
fn operator_binary_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_kontrast-node"))
        .parent()
        .expect("the node binary has a directory")
        .to_path_buf();
    kontrast_tests::chart::fresh_binary(
        &dir,
        "kontrast-operator",
        "cargo build -p kontrast-operator --bin kontrast-operator",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    dir
}

struct Installed {
    tc: TestCluster,
    dir: Scratch,
    release_ns: String,
    /// What `helm install` printed: the chart's NOTES.txt, rendered.
    notes: String,
}

impl Installed {
    /// A cluster whose node maps the operator image to cargo's build directory and the worker
    /// image to the stand-in, with the chart installed by helm (`--wait`) using `set`.
    async fn start(name: &str, release_ns: &str, set: &[&str]) -> Self {
        let operator_dir = operator_binary_dir();
        let dir = Scratch::new(name);
        let image = dir.join("standin-image");
        std::fs::create_dir_all(&image).expect("creating the stand-in image");
        let link = image.join("kontrast");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kontrast-standin"), &link)
            .expect("linking the stand-in");
        let tc = TestCluster::start_with(
            env!("CARGO_TARGET_TMPDIR"),
            name,
            env!("CARGO_BIN_EXE_kontrast-node"),
            |o| {
                o.node
                    .images
                    .push(format!("kontrast-standin={}", image.display()));
                o.node
                    .images
                    .push(format!("kontrast-operator={}", operator_dir.display()));
            },
        )
        .await
        .expect("cluster starts");
        // The local cluster's Prometheus finds the operator pod by the annotations this adds
        // (what a ServiceMonitor does in a real cluster), so the dashboards' queries can run
        // against real series.
        let port = kontrast_tests::chart::free_port().expect("a free port");
        let mut cmd = kontrast_tests::chart::install_command(
            &helm_home(),
            &tc.cluster.state,
            "kontrast",
            release_ns,
            port,
            set,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let out = tokio::task::spawn_blocking(move || output(&mut cmd))
            .await
            .expect("helm runs");
        let installed = Self {
            tc,
            dir,
            release_ns: release_ns.to_string(),
            notes: String::from_utf8_lossy(&out.stdout).into_owned(),
        };
        assert!(
            out.status.success(),
            "helm install failed:\n{}\noperator log:\n{}",
            text(&out),
            installed.operator_log().await
        );
        installed
    }

    async fn operator_pod(&self) -> Option<String> {
        kontrast_tests::chart::operator_pod(&self.tc.client, &self.release_ns).await
    }

    async fn operator_log(&self) -> String {
        kontrast_tests::chart::operator_log(
            &self.tc.client,
            &self.tc.cluster.state,
            &self.release_ns,
        )
        .await
    }

    /// Applies a stand-in run `name` in `ns` following `script` (see kontrast-standin).
    async fn run(&self, ns: &str, name: &str, script: Value, extra: Value) -> Api<ContrastiveRun> {
        let data = format!("/data/{name}");
        let host = self.tc.cluster.state.host_path_dir(Path::new(&data));
        std::fs::create_dir_all(&host).expect("creating the run's data directory");
        std::fs::write(host.join("standin.json"), script.to_string()).expect("writing the script");
        let mut spec = json!({
            "image": "ghcr.io/kontrast-dev/kontrast-standin:test",
            "nodes": 2,
            "dataset": {"format": "imagefolder", "path": data, "volume": {"hostPath": {"path": data}}},
            "recipe": {"preset": "mocov2", "arch": "resnet18", "epochs": 1, "batchSize": 4, "moco": {"queueSize": 64}},
            "failurePolicy": {"maxRestarts": 2, "stallTimeout": "30s"},
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        let run: ContrastiveRun = serde_json::from_value(json!({
            "apiVersion": "kontrast.dev/v1alpha1", "kind": "ContrastiveRun",
            "metadata": {"name": name}, "spec": spec,
        }))
        .expect("a ContrastiveRun");
        let runs: Api<ContrastiveRun> = Api::namespaced(self.tc.client.clone(), ns);
        runs.create(&PostParams::default(), &run)
            .await
            .expect("the apiserver accepts the run");
        runs
    }

    async fn wait_phase(
        &self,
        runs: &Api<ContrastiveRun>,
        name: &str,
        phase: RunPhase,
    ) -> ContrastiveRun {
        let found = wait::until(
            &format!("run {name} {phase:?}"),
            T,
            Duration::from_millis(500),
            || {
                let runs = runs.clone();
                async move {
                    runs.get(name)
                        .await
                        .ok()
                        .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(phase))
                }
            },
        )
        .await;
        match found {
            Ok(run) => run,
            Err(e) => panic!(
                "{e}; status: {:?}\noperator log:\n{}",
                runs.get(name).await.ok().and_then(|r| r.status),
                self.operator_log().await
            ),
        }
    }

    async fn lease_holder(&self) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.tc.client.clone(), &self.release_ns);
        leases.get("kontrast").await.ok()?.spec?.holder_identity
    }

    fn finish(self) {
        drop(self.dir);
        self.tc.finish();
    }
}

fn eval_spec(name: &str) -> Value {
    json!({"evaluations": [{"name": "knn", "kind": "knn",
        "dataset": {"format": "imagefolder", "path": format!("/data/{name}"),
                    "volume": {"hostPath": {"path": format!("/data/{name}")}}}}]})
}

// ---------------------------------------------------------------------------------------------
// Least privilege and what the operator exposes, on the installed chart

/// Whether this apiserver's authorizer lets `user` (in `groups`) do `verb` on `resource` of
/// `group` in namespace `ns` ("" for every namespace and for cluster-scoped kinds), for the
/// object `name` if given. `resource` may name a subresource: "contrastiveruns/status".
async fn allowed(
    client: &kube::Client,
    (user, groups): (&str, &[String]),
    ns: &str,
    (group, resource, verb): (&str, &str, &str),
    name: Option<&str>,
) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (resource, None),
    };
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": groups, "resourceAttributes": {
            "namespace": ns, "group": group, "resource": resource, "subresource": subresource,
            "verb": verb, "name": name}},
    }))
    .expect("a SubjectAccessReview");
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("the apiserver reviews access")
        .status
        .expect("a review status")
        .allowed
}

/// The groups a ServiceAccount token of namespace `ns` authenticates with.
fn service_account_groups(ns: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{ns}"),
        "system:authenticated".into(),
    ]
}

/// What the operator's ServiceAccount must not be able to do anywhere: read or write Secrets
/// (no verb at all), create workloads, reach into pods, widen its own rights, change cluster
/// objects, or touch the runs' specs (users own those; it writes status only).
const OPERATOR_MUST_NOT: &[(&str, &str, &str)] = &[
    ("", "secrets", "get"),
    ("", "secrets", "list"),
    ("", "secrets", "watch"),
    ("", "secrets", "create"),
    ("", "secrets", "update"),
    ("", "secrets", "patch"),
    ("", "secrets", "delete"),
    ("apps", "deployments", "create"),
    ("apps", "deployments", "patch"),
    ("apps", "deployments", "delete"),
    ("apps", "daemonsets", "create"),
    ("apps", "statefulsets", "create"),
    ("", "pods", "update"),
    ("", "pods/exec", "create"),
    ("", "pods/attach", "create"),
    ("", "pods/portforward", "create"),
    ("", "pods/ephemeralcontainers", "patch"),
    ("", "serviceaccounts", "create"),
    ("", "serviceaccounts/token", "create"),
    ("", "serviceaccounts", "impersonate"),
    ("", "users", "impersonate"),
    ("", "groups", "impersonate"),
    ("", "persistentvolumeclaims", "create"),
    ("", "persistentvolumes", "create"),
    ("", "namespaces", "create"),
    ("", "namespaces", "delete"),
    ("", "nodes", "create"),
    ("", "nodes", "patch"),
    ("", "nodes", "delete"),
    ("", "nodes/proxy", "get"),
    ("rbac.authorization.k8s.io", "clusterroles", "create"),
    ("rbac.authorization.k8s.io", "clusterroles", "delete"),
    ("rbac.authorization.k8s.io", "clusterroles", "escalate"),
    ("rbac.authorization.k8s.io", "clusterroles", "bind"),
    ("rbac.authorization.k8s.io", "clusterrolebindings", "create"),
    ("rbac.authorization.k8s.io", "roles", "create"),
    ("rbac.authorization.k8s.io", "rolebindings", "create"),
    (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "create",
    ),
    (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "delete",
    ),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "create",
    ),
    ("kontrast.dev", "contrastiveruns", "create"),
    ("kontrast.dev", "contrastiveruns", "update"),
    ("kontrast.dev", "contrastiveruns", "patch"),
    ("kontrast.dev", "contrastiveruns", "delete"),
    ("kontrast.dev", "contrastiveruns/status", "update"),
    // Owned objects go with their run through the garbage collector.
    ("batch", "jobs", "delete"),
    ("", "configmaps", "delete"),
    ("", "services", "delete"),
    ("coordination.k8s.io", "leases", "list"),
    ("coordination.k8s.io", "leases", "delete"),
];

/// The cluster-scoped install's ServiceAccount, reviewed by the real RBAC authorizer: it may do
/// exactly what the operator calls (OPERATOR_RULES) in every namespace and nothing of
/// OPERATOR_MUST_NOT anywhere; and its own token is refused Secrets by the apiserver.
async fn assert_operator_least_privilege(inst: &Installed, run_ns: &str) {
    let client = &inst.tc.client;
    let rel = inst.release_ns.as_str();
    let sa = format!("system:serviceaccount:{rel}:kontrast");
    let groups = service_account_groups(rel);
    let operator = (sa.as_str(), groups.as_slice());
    // The reviews mean something: the authorizer is RBAC, not AlwaysAllow (the cluster admin
    // may read Secrets; a namespace's default ServiceAccount may not).
    let admin = [
        "system:masters".to_string(),
        "system:authenticated".to_string(),
    ];
    assert!(
        allowed(
            client,
            ("kontrast-admin", &admin[..]),
            rel,
            ("", "secrets", "get"),
            None
        )
        .await
    );
    let nobody = service_account_groups(run_ns);
    let default_sa = format!("system:serviceaccount:{run_ns}:default");
    assert!(
        !allowed(
            client,
            (default_sa.as_str(), nobody.as_slice()),
            run_ns,
            ("", "secrets", "get"),
            None
        )
        .await,
        "the apiserver allows everything: the checks below would prove nothing"
    );

    let mut wrong = Vec::new();
    for &rule in OPERATOR_RULES {
        for ns in [run_ns, "any-namespace", ""] {
            if !allowed(client, operator, ns, rule, None).await {
                wrong.push(format!("refused {rule:?} in {ns:?}"));
            }
        }
    }
    for &rule in OPERATOR_MUST_NOT {
        for ns in [run_ns, rel, "kube-system", ""] {
            if allowed(client, operator, ns, rule, None).await {
                wrong.push(format!("allowed {rule:?} in {ns:?}"));
            }
        }
    }
    // The leader Lease: create in the release namespace, read and renew its own only.
    let lease = |verb| ("coordination.k8s.io", "leases", verb);
    for (ns, verb, name, want) in [
        (rel, "create", None, true),
        (rel, "get", Some("kontrast"), true),
        (rel, "update", Some("kontrast"), true),
        (rel, "get", Some("other"), false),
        (rel, "update", Some("other"), false),
        ("kube-system", "update", Some("kube-scheduler"), false),
        (run_ns, "create", None, false),
    ] {
        if allowed(client, operator, ns, lease(verb), name).await != want {
            wrong.push(format!("lease {verb} {name:?} in {ns}: not {want}"));
        }
    }
    assert!(wrong.is_empty(), "operator RBAC: {wrong:#?}");

    // The apiserver enforces the same with the operator's real token (the ServiceAccount's
    // token Secret, read here as admin): Secrets are forbidden, its own included, while its
    // own work is not.
    let token_secret = Api::<Secret>::namespaced(client.clone(), rel)
        .list(&ListParams::default())
        .await
        .expect("listing Secrets as admin")
        .items
        .into_iter()
        .find(|s| {
            s.type_.as_deref() == Some("kubernetes.io/service-account-token")
                && s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("kubernetes.io/service-account.name"))
                    .is_some_and(|n| n == "kontrast")
        })
        .expect("the operator ServiceAccount's token Secret");
    let token_name = token_secret.metadata.name.clone().expect("a name");
    let token = &token_secret.data.as_ref().expect("data")["token"].0;
    let token_file = inst.dir.join("operator-token");
    std::fs::write(&token_file, token).expect("writing the token");
    let mut kc = kube::config::Kubeconfig::read_from(&inst.tc.cluster.state.kubeconfig)
        .expect("the admin kubeconfig");
    for user in &mut kc.auth_infos {
        let auth = user.auth_info.get_or_insert_with(Default::default);
        auth.token = None;
        auth.token_file = Some(token_file.display().to_string());
    }
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("a config with the operator's token");
    let as_operator = kube::Client::try_from(config).expect("a client");
    let lp = ListParams::default();
    let own = Api::<Secret>::namespaced(as_operator.clone(), rel);
    let forbidden = [
        (
            "list Secrets in its namespace",
            own.list(&lp).await.map(drop),
        ),
        ("get its own token", own.get(&token_name).await.map(drop)),
        (
            "list Secrets of the runs",
            Api::<Secret>::namespaced(as_operator.clone(), run_ns)
                .list(&lp)
                .await
                .map(drop),
        ),
        (
            "list Secrets cluster-wide",
            Api::<Secret>::all(as_operator.clone())
                .list(&lp)
                .await
                .map(drop),
        ),
        (
            "create a Deployment",
            Api::<Deployment>::namespaced(as_operator.clone(), run_ns)
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": "x"}, "spec": {
                        "selector": {"matchLabels": {"a": "b"}},
                        "template": {"metadata": {"labels": {"a": "b"}},
                                     "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
                    .expect("a Deployment"),
                )
                .await
                .map(drop),
        ),
    ];
    for (what, result) in forbidden {
        assert!(
            matches!(&result, Err(kube::Error::Api(s)) if s.code == 403),
            "the operator's token may {what}: {result:?}"
        );
    }
    Api::<Pod>::namespaced(as_operator.clone(), run_ns)
        .list(&lp)
        .await
        .expect("the operator's token lists the runs' pods");
    Api::<ContrastiveRun>::all(as_operator)
        .list(&lp)
        .await
        .expect("the operator's token lists runs everywhere");
}

/// `http://IP:PORT` of the operator pod's metrics port, where Prometheus scrapes it.
async fn operator_endpoint(inst: &Installed) -> String {
    let name = inst.operator_pod().await.expect("the operator pod");
    let pod = Api::<Pod>::namespaced(inst.tc.client.clone(), &inst.release_ns)
        .get(&name)
        .await
        .expect("the operator pod");
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a pod IP");
    let port = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].ports.as_ref())
        .and_then(|ports| {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some("http-metrics"))
        })
        .map(|p| p.container_port)
        .expect("the metrics port");
    format!("http://{ip}:{port}")
}

/// The operator's HTTP endpoint (pod IP and metrics port, as Prometheus scrapes it) serves
/// reads only: every write method on every path is refused with 405 (404 for paths it does
/// not serve) and changes nothing.
async fn assert_operator_endpoint_is_read_only(inst: &Installed, run_ns: &str) {
    let base = operator_endpoint(inst).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let result_line = format!(
        r#"kontrast_run_evaluation_result{{evaluation="knn",metric="top1",namespace="{run_ns}",run="r1"}} 42.5"#
    );
    let get = |path: &str| {
        let req = http.get(format!("{base}{path}"));
        async move {
            let resp = req.send().await.expect("GET");
            (resp.status().as_u16(), resp.text().await.expect("a body"))
        }
    };
    let (code, metrics) = get("/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.lines().any(|l| l == result_line), "{metrics}");
    // A body that would overwrite the result, were it read (Pushgateway style).
    let forged = format!("{}\n", result_line.replace("42.5", "0"));
    let mut wrong = Vec::new();
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    ] {
        for path in [
            "/metrics",
            "/healthz",
            "/readyz",
            "/",
            "/debug/pprof/profile",
        ] {
            let resp = http
                .request(method.clone(), format!("{base}{path}"))
                .body(forged.clone())
                .send()
                .await
                .expect("a response");
            let code = resp.status().as_u16();
            // Served paths answer 405; the rest 404 whatever the method.
            let want = if ["/metrics", "/healthz", "/readyz"].contains(&path) {
                405
            } else {
                404
            };
            if code != want {
                wrong.push(format!("{method} {path}: {code}"));
            }
        }
    }
    assert!(wrong.is_empty(), "write methods answered: {wrong:?}");
    let (code, after) = get("/metrics").await;
    assert_eq!(code, 200);
    assert!(after.lines().any(|l| l == result_line), "{after}");
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await.0, 200);
}

/// No Secret's value (ServiceAccount tokens above all) turns up in the operator's log, its
/// metrics, the run's status or the events it wrote.
async fn assert_no_secret_leaks(inst: &Installed, run_ns: &str, run: &ContrastiveRun) {
    let client = &inst.tc.client;
    let secrets: Vec<String> = Api::<Secret>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("listing Secrets as admin")
        .items
        .into_iter()
        .flat_map(|s| s.data.unwrap_or_default().into_iter())
        .filter(|(key, _)| key != "ca.crt" && key != "namespace")
        .map(|(_, v)| String::from_utf8_lossy(&v.0).into_owned())
        .filter(|v| v.len() >= 16)
        .collect();
    assert!(!secrets.is_empty(), "the cluster has ServiceAccount tokens");
    let metrics = reqwest::get(format!("{}/metrics", operator_endpoint(inst).await))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("a body");
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), run_ns)
        .list(&ListParams::default())
        .await
        .expect("events");
    let places = [
        ("the operator log", inst.operator_log().await),
        ("the operator metrics", metrics),
        ("the run", serde_json::to_string(run).expect("JSON")),
        (
            "the events",
            serde_json::to_string(&events.items).expect("JSON"),
        ),
    ];
    for (what, text) in &places {
        assert!(!text.is_empty(), "{what} is empty");
        for (i, secret) in secrets.iter().enumerate() {
            assert!(
                !text.contains(secret.as_str()),
                "Secret value #{i} is in {what}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_the_operator_with_cluster_rbac_through_a_restart_and_an_evaluation() {
    let inst = Installed::start("chart-cluster", "kontrast-system", &[]).await;
    for line in [
        "It reconciles ContrastiveRuns in every namespace.",
        "kubectl -n kontrast-system rollout status deploy/kontrast",
        "kubectl -n kontrast-system get lease kontrast",
        "Set monitoring.dashboards.enabled=true",
    ] {
        assert!(
            inst.notes.contains(line),
            "NOTES lack {line:?}:\n{}",
            inst.notes
        );
    }
    let ns = inst.tc.namespace("ml").await.expect("namespace ml");
    // One rank fails in attempt 1: the operator must delete the gang's pods (delete), create
    // attempt 2 (patch), then run the evaluation Job (get, patch) and read its pod (list).
    let runs = inst
        .run(
            &ns,
            "r1",
            json!({"steps": 8, "failExit": 1, "failRank": 1, "failAttempt": 1, "failAfterSteps": 2,
                   "evalMetrics": {"knn": {"top1": 42.5}}}),
            eval_spec("r1"),
        )
        .await;
    let run = inst.wait_phase(&runs, "r1", RunPhase::Succeeded).await;
    let status = run.status.expect("a status");
    assert_eq!((status.attempt, status.restarts), (Some(2), 1));
    assert_eq!(status.results["knn"]["top1"], 42.5);

    // The operator pod took the Lease the chart named, in the release namespace.
    let pod = inst.operator_pod().await.expect("the operator pod");
    assert_eq!(inst.lease_holder().await.as_deref(), Some(pod.as_str()));
    // Events need their own grant (a refused event only logs a warning, so check they exist).
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(inst.tc.client.clone(), &ns);
    let reasons: BTreeSet<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("kontrast-operator"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.contains("GangCreated") && reasons.contains("Succeeded"),
        "{reasons:?}\noperator log:\n{}",
        inst.operator_log().await
    );
    // Every dashboard query built on the operator's metrics returns series from the real
    // Prometheus scraping the real operator (the worker's metrics need the real worker, which
    // this cluster does not run); every alert expression evaluates.
    let prometheus = inst.tc.cluster.state.prometheus();
    wait::until(
        "the run's results in Prometheus",
        T,
        Duration::from_millis(500),
        || {
            let p = prometheus.clone();
            async move {
                let s = p
                    .query(r#"kontrast_run_evaluation_result{run="r1"}"#)
                    .await
                    .ok()?;
                (!s.is_empty()).then_some(())
            }
        },
    )
    .await
    .expect("Prometheus scrapes the operator");
    let mut checked = 0;
    for (name, dashboard) in dashboards() {
        for (what, expr) in dashboard_queries(&name, &dashboard) {
            let names = metric_names(&expr).expect("a query");
            if !names.iter().all(|n| n.starts_with("kontrast_run_")) {
                continue;
            }
            let promql = as_promql(&expr);
            let result = prometheus.query(&promql).await;
            assert!(
                result.as_ref().is_ok_and(|r| !r.is_empty()),
                "{name} {what}: {promql} gave {result:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "{checked} queries checked");
    let spec = rule_spec(&[]);
    for rule in spec["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
    {
        let expr = rule["expr"].as_str().expect("expr");
        let result = prometheus.query(expr).await;
        assert!(result.is_ok(), "alert {}: {result:?}", rule["alert"]);
    }
    // The cluster's role aggregation folded the chart's roles into the built-in ones.
    let roles: Api<ClusterRole> = Api::all(inst.tc.client.clone());
    wait::until(
        "aggregated edit role",
        T,
        Duration::from_millis(300),
        || {
            let roles = roles.clone();
            async move {
                let edit = roles.get("edit").await.ok()?;
                edit.rules?
                    .iter()
                    .any(|r| {
                        r.api_groups.iter().flatten().any(|g| g == "kontrast.dev")
                            && r.verbs.iter().any(|v| v == "create")
                    })
                    .then_some(())
            }
        },
    )
    .await
    .expect("edit includes ContrastiveRuns");
    // Least privilege as the real authorizer decides it, an endpoint that takes no writes, and
    // no Secret in the operator's log, metrics, status or events.
    assert_operator_least_privilege(&inst, &ns).await;
    assert_operator_endpoint_is_read_only(&inst, &ns).await;
    let run = runs.get("r1").await.expect("the run");
    assert_no_secret_leaks(&inst, &ns, &run).await;
    inst.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_with_namespace_scope_reconciles_only_its_namespace() {
    let inst = Installed::start(
        "chart-namespace",
        "ml",
        &[
            "rbac.scope=namespace",
            "monitoring.serviceMonitor.enabled=true",
        ],
    )
    .await;
    // This cluster has no Prometheus Operator: the ServiceMonitor is left out, and said so.
    for line in [
        "It reconciles ContrastiveRuns in namespace ml only.",
        "kubectl apply -n ml -f examples/quickstart.yaml",
        "WARNING: monitoring is enabled but this cluster does not serve monitoring.coreos.com/v1",
    ] {
        assert!(
            inst.notes.contains(line),
            "NOTES lack {line:?}:\n{}",
            inst.notes
        );
    }
    let other = inst.tc.namespace("other").await.expect("namespace other");
    let ignored = inst
        .run(&other, "elsewhere", json!({"steps": 2}), json!({}))
        .await;
    let runs = inst
        .run(
            "ml",
            "r2",
            json!({"steps": 5, "evalMetrics": {"knn": {"top1": 7.0}}}),
            eval_spec("r2"),
        )
        .await;
    let run = inst.wait_phase(&runs, "r2", RunPhase::Succeeded).await;
    assert_eq!(run.status.expect("a status").results["knn"]["top1"], 7.0);
    assert_eq!(
        inst.lease_holder().await,
        inst.operator_pod().await,
        "the operator holds its Lease"
    );
    // The run outside the watched namespace was never touched (and the operator, holding only a
    // Role in "ml", never needed to be allowed there).
    let untouched = ignored.get("elsewhere").await.expect("the other run");
    assert!(untouched.status.is_none(), "{:?}", untouched.status);
    let log = inst.operator_log().await;
    assert!(
        !log.contains("forbidden"),
        "the operator was refused something:\n{log}"
    );
    // And it is not allowed there, as the real authorizer sees it: the Role grants the operator's
    // rules in "ml" and nothing in any other namespace or cluster-wide.
    let sa = format!("system:serviceaccount:{}:kontrast", inst.release_ns);
    let groups = service_account_groups(&inst.release_ns);
    let operator = (sa.as_str(), groups.as_slice());
    let mut wrong = Vec::new();
    for &rule in OPERATOR_RULES {
        if !allowed(&inst.tc.client, operator, "ml", rule, None).await {
            wrong.push(format!("refused {rule:?} in ml"));
        }
        for ns in [other.as_str(), ""] {
            if allowed(&inst.tc.client, operator, ns, rule, None).await {
                wrong.push(format!("allowed {rule:?} in {ns:?}"));
            }
        }
    }
    for &rule in OPERATOR_MUST_NOT {
        if allowed(&inst.tc.client, operator, "ml", rule, None).await {
            wrong.push(format!("allowed {rule:?} in ml"));
        }
    }
    assert!(wrong.is_empty(), "namespace-scoped RBAC: {wrong:#?}");
    inst.finish();
}
