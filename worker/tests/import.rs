//! `kontrast import` against checkpoints written by PyTorch the way the reference training code
//! writes them (`tests/reference/moco_checkpoint.py`): every tensor arrives bit for bit, the
//! result trains on and evaluates like a checkpoint of our own, and every unusable input is
//! refused with a message that names the problem, leaving the checkpoint directory untouched.
mod common;
mod reference;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{Proc, fashion_mnist_subset, kontrast, read_tensors, small_run, write_config};
use kontrast_api::config::RunConfig;
use kontrast_worker::train::trainer::moco_spec;

/// The small test run at torchvision's ResNet-18 width (the reference encoders are torchvision's).
fn run_config(data: &Path, epochs: u32) -> RunConfig {
    let mut config = small_run(data, 1, epochs, 16, 32);
    config.recipe.width = 64;
    config
}

fn import(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    kontrast(dir, &all).output().expect("run kontrast import")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_pytorch_checkpoint_imports_bit_for_bit_and_training_continues_from_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = fashion_mnist_subset(&dir.path().join("data"), 64);
    let config = run_config(&data, 4);
    let config_path = write_config(dir.path(), &config);
    let file = reference::write_checkpoint(
        dir.path(),
        &moco_spec(&config),
        "checkpoint.pth.tar",
        // A slot a batch of 16 starts at, not the fresh pointer 0: its import is visible.
        &["--epoch", "3", "--queue-ptr", "16"],
    );
    let checkpoints = dir.path().join("checkpoints");
    let (file_arg, config_arg, checkpoint_arg) = (
        file.display().to_string(),
        config_path.display().to_string(),
        checkpoints.display().to_string(),
    );
    let out = import(
        dir.path(),
        &[
            "--from",
            &file_arg,
            "--config",
            &config_arg,
            "--checkpoint-dir",
            &checkpoint_arg,
        ],
    );
    assert!(out.status.success(), "import failed:\n{}", text(&out));
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the import prints a JSON summary");
    assert_eq!(summary["epoch"], 3, "{summary}");
    assert_eq!(summary["fresh"], serde_json::json!([]), "{summary}");
    assert_eq!(summary["keyFromQuery"], false, "{summary}");
    assert_eq!(
        summary["queuePtrReset"],
        serde_json::Value::Null,
        "{summary}"
    );

    // Every tensor of the PyTorch model — both encoders with their BN statistics, the queues and
    // their pointer — is in the checkpoint unchanged; the rest is the optimiser's (not imported)
    // and nothing else.
    let expected = read_tensors(&dir.path().join("expected.safetensors"));
    let imported = read_tensors(&checkpoints.join("epoch-0003.safetensors"));
    for (name, want) in &expected {
        let got = imported
            .get(name)
            .unwrap_or_else(|| panic!("{name} is missing from the imported checkpoint"));
        assert_eq!(got.size(), want.size(), "{name}: shape");
        assert_eq!(got.kind(), want.kind(), "{name}: dtype");
        assert!(got.equal(want), "{name}: values differ");
    }
    assert_eq!(imported.len(), expected.len(), "unexpected extra tensors");

    // The imported checkpoint is the run's own: training resumes from epoch 3 and does epoch 4.
    let train = kontrast(
        dir.path(),
        &[
            "train",
            "--config",
            &config_arg,
            "--checkpoint-dir",
            &checkpoint_arg,
            "--metrics-port",
            "0",
            "--data-threads",
            "0",
        ],
    );
    let mut proc = Proc::spawn(train, dir.path(), "train");
    proc.assert_success(Duration::from_secs(180));
    assert!(
        proc.stderr().contains("resumed") && proc.stderr().contains("epoch=3"),
        "training did not resume from the import:\n{}",
        proc.stderr()
    );
    assert!(checkpoints.join("epoch-0004.json").is_file());
}

#[test]
fn a_bare_state_dict_needs_an_epoch_and_mismatches_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = fashion_mnist_subset(&dir.path().join("data"), 16);
    let config = run_config(&data, 4);
    let config_path = write_config(dir.path(), &config);
    let file = reference::write_checkpoint(dir.path(), &moco_spec(&config), "bare.pt", &["--bare"]);
    let checkpoints = dir.path().join("checkpoints");
    let (file_arg, config_arg, checkpoint_arg) = (
        file.display().to_string(),
        config_path.display().to_string(),
        checkpoints.display().to_string(),
    );
    let base = [
        "--from",
        file_arg.as_str(),
        "--config",
        config_arg.as_str(),
        "--checkpoint-dir",
        checkpoint_arg.as_str(),
    ];

    // A queue pointer no batch of the run can start at (5, batch 16) is reset, not imported.
    let odd = dir.path().join("odd");
    std::fs::create_dir_all(&odd).expect("mkdir");
    reference::write_checkpoint(&odd, &moco_spec(&config), "odd.pt", &["--queue-ptr", "5"]);
    let (odd_file, odd_checkpoints) = (
        odd.join("odd.pt").display().to_string(),
        odd.join("checkpoints").display().to_string(),
    );
    let out = import(
        dir.path(),
        &[
            "--from",
            &odd_file,
            "--config",
            &config_arg,
            "--checkpoint-dir",
            &odd_checkpoints,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(summary["queuePtrReset"], 5, "{summary}");

    // No epoch in a bare state dict: the user must say.
    let out = import(dir.path(), &base);
    assert!(!out.status.success());
    assert!(text(&out).contains("pass --epoch"), "{}", text(&out));

    // Another width: the first mismatching tensor is named with both shapes.
    let mut narrow = config.clone();
    narrow.recipe.width = 32;
    let narrow_dir = dir.path().join("narrow");
    std::fs::create_dir_all(&narrow_dir).expect("mkdir");
    let narrow_path = write_config(&narrow_dir, &narrow).display().to_string();
    let out = import(
        dir.path(),
        &[
            "--from",
            &file_arg,
            "--config",
            &narrow_path,
            "--checkpoint-dir",
            &checkpoint_arg,
            "--epoch",
            "2",
        ],
    );
    assert!(!out.status.success());
    let message = text(&out);
    assert!(
        message.contains("\"encoder_q.conv1.weight\" has shape [64, 3, 3, 3]")
            && message.contains("recipe.width"),
        "{message}"
    );

    // An epoch past the run's length is refused.
    let mut args = base.to_vec();
    args.extend(["--epoch", "9"]);
    let out = import(dir.path(), &args);
    assert!(!out.status.success());
    assert!(text(&out).contains("trains 4 epochs"), "{}", text(&out));

    // A file that is not a torch.save file.
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"not a checkpoint").expect("write junk");
    let junk_arg = junk.display().to_string();
    let out = import(
        dir.path(),
        &[
            "--from",
            &junk_arg,
            "--config",
            &config_arg,
            "--checkpoint-dir",
            &checkpoint_arg,
            "--epoch",
            "2",
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("junk.pt"), "{}", text(&out));
    assert!(!checkpoints.exists(), "a failed import wrote something");

    // With the epoch given it imports; a second import into the same directory is refused and
    // leaves the first untouched.
    let mut args = base.to_vec();
    args.extend(["--epoch", "2"]);
    let out = import(dir.path(), &args);
    assert!(out.status.success(), "{}", text(&out));
    let manifest = std::fs::read(checkpoints.join("epoch-0002.json")).expect("manifest");
    let out = import(dir.path(), &args);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("already holds checkpoints (newest: epoch 2)"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(checkpoints.join("epoch-0002.json")).expect("manifest"),
        manifest
    );
}
