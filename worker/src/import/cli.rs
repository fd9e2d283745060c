//! `kontrast import --from FILE --config RUN --checkpoint-dir DIR`: writes a PyTorch MoCo
//! checkpoint into an empty checkpoint directory as the run's checkpoint of the file's epoch.
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::json;
use tch::Device;

use crate::checkpoint::{CheckpointStore, Meta, torch_save};
use crate::model::Moco;
use crate::train::sgd::{Sgd, SgdConfig};
use crate::train::{config, state, trainer};

/// Arguments of `kontrast import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The PyTorch checkpoint (`torch.save` of a dict with `state_dict`, as MoCo's and the
    /// Revisiting code's training scripts write; a bare state dict works too).
    #[arg(long = "from")]
    pub from: PathBuf,
    /// Run-config document the checkpoint is for (architecture, width, queue, …).
    #[arg(long, env = "KONTRAST_CONFIG")]
    pub config: PathBuf,
    /// Checkpoint directory to write to; it must hold no checkpoint yet.
    #[arg(long, env = "KONTRAST_CHECKPOINT_DIR")]
    pub checkpoint_dir: PathBuf,
    /// Epochs completed, when the file does not say (its `epoch`) or should be overridden.
    #[arg(long)]
    pub epoch: Option<u32>,
}

/// Runs `kontrast import`, printing a JSON summary on stdout.
pub fn run(args: Args) -> Result<()> {
    let run = config::load(&args.config)?;
    let store = CheckpointStore::new(&args.checkpoint_dir, run.checkpoint.keep);
    // Saving an epoch deletes later ones (an abandoned history): never let an import do that.
    let existing = store
        .list()
        .with_context(|| format!("listing {}", args.checkpoint_dir.display()))?;
    if let Some(newest) = existing.iter().map(|e| e.epoch).max() {
        bail!(
            "{} already holds checkpoints (newest: epoch {newest}); import into an empty directory",
            args.checkpoint_dir.display()
        );
    }
    let file = torch_save::read(&args.from)?;
    let moco = Moco::new(trainer::moco_spec(&run), Device::Cpu);
    let arch = serde_json::to_value(run.recipe.arch)?
        .as_str()
        .unwrap_or_default()
        .to_string();
    let global_batch = i64::from(run.world.batch_size_per_rank) * i64::from(run.world.world_size);
    let summary = super::import(&file, &moco, &arch, global_batch)
        .with_context(|| format!("importing {}", args.from.display()))?;
    let epoch = match (args.epoch, summary.epoch) {
        (Some(e), _) => e,
        (None, Some(e)) => u32::try_from(e)
            .with_context(|| format!("the file's epoch {e} is not a valid epoch count"))?,
        (None, None) => bail!(
            "{} does not say how many epochs it was trained for; pass --epoch",
            args.from.display()
        ),
    };
    if epoch > run.recipe.epochs {
        bail!(
            "the checkpoint is of epoch {epoch} but the run config trains {} epochs; pass --epoch \
             or raise recipe.epochs",
            run.recipe.epochs
        );
    }
    let sgd = Sgd::new(
        moco.trainable(),
        SgdConfig {
            momentum: run.recipe.optimizer.momentum,
            weight_decay: run.recipe.optimizer.weight_decay,
        },
    );
    let meta = Meta {
        // PyTorch's files count epochs, not steps; progress counts steps from here.
        step: 0,
        config_hash: state::config_hash(&run)?,
        extra: json!({
            "importedFrom": args.from.file_name().map(|n| n.to_string_lossy().into_owned()),
            "importedPrefix": summary.prefix,
        }),
    };
    let manifest = store.save(epoch, &state::tensors(&moco, &sgd), &meta)?;
    println!(
        "{}",
        json!({
            "checkpoint": manifest.display().to_string(),
            "epoch": epoch,
            "imported": summary.imported,
            "fresh": summary.fresh,
            "keyFromQuery": summary.key_from_query,
            "queuePtrReset": summary.queue_ptr_reset,
        })
    );
    Ok(())
}
