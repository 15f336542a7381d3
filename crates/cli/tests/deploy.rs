//! The Kubernetes manifests in `deploy/kubernetes` are valid and start
//! the binary they ship with flags it accepts.
//!
//! Two checks: every manifest the kustomization lists passes
//! `kubernetes-validate --strict` (the Kubernetes API's JSON schemas;
//! installed by `scripts/test`, found through `$STRATUS_K8S_VALIDATE`),
//! and every container running the `stratus` image resolves its
//! arguments, environment and mounted config file into a valid
//! configuration (`stratus ... --print-config`, which checks everything a
//! start would check short of connecting).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn validator() -> PathBuf {
    match std::env::var_os("STRATUS_K8S_VALIDATE") {
        Some(p) => PathBuf::from(p),
        None => {
            let local = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/k8s-venv/bin/kubernetes-validate");
            assert!(
                local.exists(),
                "kubernetes-validate is missing: run scripts/test, which installs it into \
                 target/k8s-venv (or set STRATUS_K8S_VALIDATE to its path)"
            );
            local
        }
    }
}

/// The files the kustomization lists, in order.
fn resources() -> Vec<PathBuf> {
    let text = std::fs::read_to_string(deploy_dir().join("kustomization.yaml")).unwrap();
    let k: Value = serde_yaml_ng::from_str(&text).unwrap();
    k["resources"]
        .as_sequence()
        .expect("kustomization.yaml lists resources")
        .iter()
        .map(|r| deploy_dir().join(r.as_str().unwrap()))
        .collect()
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn kustomization_lists_every_manifest() {
    let listed: Vec<String> = resources()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for entry in std::fs::read_dir(deploy_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(
                listed.contains(&name),
                "{name} is not in kustomization.yaml"
            );
        }
    }
}

#[test]
fn manifests_pass_the_kubernetes_schemas() {
    let files = resources();
    let out = Command::new(validator())
        .arg("--strict")
        .arg("--quiet")
        .args(&files)
        .output()
        .expect("running kubernetes-validate");
    assert!(
        out.status.success(),
        "kubernetes-validate failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Expands Kubernetes' `$(VAR)` references from `env`.
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    assert!(!out.contains("$("), "unresolved variable in {s:?}");
    out
}

#[test]
fn every_stratus_container_has_a_valid_config() {
    let docs: Vec<Value> = resources().iter().flat_map(|p| documents(p)).collect();
    let configs: BTreeMap<String, BTreeMap<String, String>> = docs
        .iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .map(|d| {
            let name = d["metadata"]["name"].as_str().unwrap().to_string();
            let data = serde_yaml_ng::from_value(d["data"].clone()).unwrap();
            (name, data)
        })
        .collect();
    let scratch = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    for d in &docs {
        if !matches!(d["kind"].as_str(), Some("Deployment" | "StatefulSet")) {
            continue;
        }
        let name = d["metadata"]["name"].as_str().unwrap();
        let pod = &d["spec"]["template"]["spec"];
        // Volumes backed by ConfigMaps, by volume name.
        let mut volumes = BTreeMap::new();
        for v in pod["volumes"].as_sequence().into_iter().flatten() {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                volumes.insert(v["name"].as_str().unwrap().to_string(), cm.to_string());
            }
        }
        for c in pod["containers"].as_sequence().unwrap() {
            if c["image"] != "stratus" {
                continue;
            }
            // Environment: literal values as given, references to the
            // downward API and Secrets as plausible stand-ins.
            let mut env = BTreeMap::new();
            for e in c["env"].as_sequence().into_iter().flatten() {
                let key = e["name"].as_str().unwrap().to_string();
                let value = match e["value"].as_str() {
                    Some(v) => v.to_string(),
                    None if e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP" => {
                        "10.1.2.3".to_string()
                    }
                    None => format!("{name}-0"),
                };
                env.insert(key, value);
            }
            // Mounted config files land in a scratch directory.
            let mut mounts = BTreeMap::new();
            for m in c["volumeMounts"].as_sequence().into_iter().flatten() {
                let vol = m["name"].as_str().unwrap();
                if let Some(cm) = volumes.get(vol) {
                    let dir = scratch.path().join(format!("{name}-{vol}"));
                    std::fs::create_dir_all(&dir).unwrap();
                    for (file, text) in configs.get(cm).expect("the ConfigMap exists") {
                        std::fs::write(dir.join(file), text).unwrap();
                    }
                    mounts.insert(m["mountPath"].as_str().unwrap().to_string(), dir);
                }
            }
            let args: Vec<String> = c["args"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|a| {
                    let mut a = expand(a.as_str().unwrap(), &env);
                    for (path, dir) in &mounts {
                        a = a.replace(path.as_str(), &dir.to_string_lossy());
                    }
                    a
                })
                .collect();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_stratus"));
            cmd.args(&args).arg("--print-config").env_clear();
            for (k, v) in &env {
                cmd.env(k, v);
            }
            let out = cmd.output().unwrap();
            let printed = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{name}: stratus {args:?} refuses its configuration:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let target = args
                .iter()
                .find_map(|a| a.strip_prefix("--target="))
                .expect("every workload names its target");
            assert!(
                printed.contains(&format!("target: {target}")),
                "{name}: {printed}"
            );
            checked.push(target.to_string());
        }
    }
    for t in [
        "distributor",
        "ingester",
        "querier",
        "store",
        "compactor",
        "query-frontend",
    ] {
        assert!(checked.iter().any(|c| c == t), "no {t} workload in deploy/");
    }
}
