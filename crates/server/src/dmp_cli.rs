//! `socle dmp …`: the operator's view of the DMP's feed-event queue (what the MSSanté copy and the
//! notifications of Mon Espace Santé consume).

use clap::Subcommand;
use socle_dmp::record;

use crate::StoreArgs;

#[derive(Subcommand)]
pub(crate) enum DmpCommand {
    /// Subscribe a consumer (a service: the MSSanté copy, the notifications…) to the feed events: each
    /// subscribed consumer gets every event, whatever the others do.
    Subscribe {
        #[command(flatten)]
        store: StoreArgs,
        /// Name of the consumer (e.g. mssante-copy).
        consumer: String,
        /// Only the events fed from now on (by default the events already in the log too).
        #[arg(long)]
        from_now: bool,
    },
    /// Unsubscribe a consumer (what it had still to process is forgotten).
    Unsubscribe {
        #[command(flatten)]
        store: StoreArgs,
        consumer: String,
    },
    /// List the subscribed consumers and how many events each has still to process.
    Consumers {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the events some consumer (or `--consumer`) has still to process, oldest first (one JSON object
    /// per line, with the consumers that await it).
    Events {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        consumer: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Hand a consumer's events to it for a while (lease); each must then be acknowledged, or it is handed
    /// out again when the lease ends.
    Claim {
        #[command(flatten)]
        store: StoreArgs,
        /// Name of the subscribed consumer.
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
    /// Acknowledge an event a consumer has processed.
    Ack {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        consumer: String,
        /// The event's id.
        id: String,
    },
}

fn dmp_store(store: &StoreArgs) -> anyhow::Result<std::sync::Arc<dyn socle_store::Store>> {
    let st = crate::open_store(store)?.0;
    record::open(&st).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(st)
}

/// An operator's mistake (unknown consumer, bad name): said on stderr, exit status 2.
fn refused(e: socle_dmp::DmpError) -> anyhow::Result<std::process::ExitCode> {
    match e {
        socle_dmp::DmpError::Operation(m) => {
            eprintln!("{m}");
            Ok(std::process::ExitCode::from(2))
        }
        e => Err(anyhow::anyhow!("{e}")),
    }
}

pub(crate) fn run(cmd: DmpCommand) -> anyhow::Result<std::process::ExitCode> {
    let ok = std::process::ExitCode::SUCCESS;
    match cmd {
        DmpCommand::Subscribe {
            store,
            consumer,
            from_now,
        } => match record::subscribe(&dmp_store(&store)?, &consumer, !from_now) {
            Ok(true) => println!("{consumer} abonné aux événements du DMP"),
            Ok(false) => println!("{consumer} était déjà abonné"),
            Err(e) => return refused(e),
        },
        DmpCommand::Unsubscribe { store, consumer } => {
            if !record::unsubscribe(&dmp_store(&store)?, &consumer)
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                eprintln!("{consumer} n'était pas abonné");
                return Ok(std::process::ExitCode::from(1));
            }
            println!("{consumer} désabonné");
        }
        DmpCommand::Consumers { store } => {
            for (name, n) in
                record::consumers(&dmp_store(&store)?).map_err(|e| anyhow::anyhow!("{e}"))?
            {
                println!("{}", serde_json::json!({"consumer": name, "pending": n}));
            }
        }
        DmpCommand::Events {
            store,
            consumer,
            limit,
        } => match record::pending(&dmp_store(&store)?, consumer.as_deref(), limit) {
            Ok(events) => {
                for (e, awaiting) in events {
                    let mut v = e.to_json();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("attempts");
                        o.insert("awaiting".into(), serde_json::json!(awaiting));
                    }
                    println!("{v}");
                }
            }
            Err(e) => return refused(e),
        },
        DmpCommand::Claim {
            store,
            consumer,
            limit,
            lease,
        } => match record::claim(
            &dmp_store(&store)?,
            &consumer,
            limit,
            lease.saturating_mul(1000),
        ) {
            Ok(events) => {
                for e in events {
                    println!("{}", e.to_json());
                }
            }
            Err(e) => return refused(e),
        },
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
        }
        DmpCommand::Ack {
            store,
            consumer,
            id,
        } => {
            if !record::ack(&dmp_store(&store)?, &consumer, &id)
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                eprintln!("événement {id} : rien en attente de ce nom pour {consumer}");
                return Ok(std::process::ExitCode::from(1));
            }
            println!("événement {id} acquitté par {consumer}");
        }
    }
    Ok(ok)
}
