//! `socle dmp …`: the operator's view of the DMP's feed-event queue (what the MSSanté copy and the
//! notifications of Mon Espace Santé consume).

use clap::Subcommand;
use socle_dmp::record;

use crate::StoreArgs;

#[derive(Subcommand)]
pub(crate) enum DmpCommand {
    /// List pending feed events, oldest first (one JSON object per line).
    Events {
        #[command(flatten)]
        store: StoreArgs,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Hand pending events to a consumer for a while (lease); each must then be acknowledged, or it is handed
    /// out again when the lease ends.
    Claim {
        #[command(flatten)]
        store: StoreArgs,
        /// Name of the consumer (e.g. mssante-copy).
        #[arg(long)]
        consumer: String,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Lease, in seconds.
        #[arg(long, default_value_t = 60)]
        lease: i64,
    },
    /// Remove the stored document bytes no Binary names (feeds refused after their bytes were written, or
    /// interrupted by a crash), last written more than `--older-than` seconds ago.
    Sweep {
        #[command(flatten)]
        store: StoreArgs,
        /// Age in seconds of the unreferenced bytes to remove (at most 100 years).
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(0..=3_155_760_000))]
        older_than: u64,
        /// Only count what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Acknowledge an event once it has been processed.
    Ack {
        #[command(flatten)]
        store: StoreArgs,
        /// The event's id.
        id: String,
    },
}

pub(crate) fn run(cmd: DmpCommand) -> anyhow::Result<std::process::ExitCode> {
    let (store, events) = match cmd {
        DmpCommand::Events { store, limit } => {
            let st = crate::open_store(&store)?.0;
            record::open(&st).map_err(|e| anyhow::anyhow!("{e}"))?;
            (st.clone(), record::pending(&st, limit))
        }
        DmpCommand::Claim {
            store,
            consumer,
            limit,
            lease,
        } => {
            let st = crate::open_store(&store)?.0;
            record::open(&st).map_err(|e| anyhow::anyhow!("{e}"))?;
            (
                st.clone(),
                record::claim(&st, &consumer, limit, lease.saturating_mul(1000)),
            )
        }
        DmpCommand::Sweep {
            store,
            older_than,
            dry_run,
        } => {
            let st = crate::open_store(&store)?.0;
            let blobs = socle_store::blob::open(&store.blob_config()?)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let before = std::time::SystemTime::now()
                .checked_sub(std::time::Duration::from_secs(older_than))
                .ok_or_else(|| anyhow::anyhow!("--older-than {older_than} : durée hors limites"))?;
            let r = record::sweep(&st, blobs.as_ref(), before, dry_run)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "{} document(s) référencé(s) ; {} document(s) orphelin(s) {} ({} octets)",
                r.referenced,
                r.removed,
                if dry_run {
                    "à supprimer"
                } else {
                    "supprimé(s)"
                },
                r.removed_bytes
            );
            return Ok(std::process::ExitCode::SUCCESS);
        }
        DmpCommand::Ack { store, id } => {
            let st = crate::open_store(&store)?.0;
            record::open(&st).map_err(|e| anyhow::anyhow!("{e}"))?;
            if record::ack(&st, &id).map_err(|e| anyhow::anyhow!("{e}"))? {
                println!("événement {id} acquitté");
                return Ok(std::process::ExitCode::SUCCESS);
            }
            eprintln!("événement {id} : aucun événement en attente de ce nom");
            return Ok(std::process::ExitCode::from(1));
        }
    };
    drop(store);
    for e in events.map_err(|e| anyhow::anyhow!("{e}"))? {
        println!("{}", e.to_json());
    }
    Ok(std::process::ExitCode::SUCCESS)
}
