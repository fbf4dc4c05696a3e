//! The access log apart from the data (SQLite): its records are indexed by patient later, in bulk; a patient's
//! trail is the same whether its records are indexed, pending, or some of each.

use socle_store::audit::{self, AuditRecord};

fn record(i: i64, patient: &str) -> AuditRecord {
    AuditRecord {
        recorded: 1_700_000_000_000 + i,
        principal: format!("pro:{i}"),
        action: "read".into(),
        rtype: Some("Observation".into()),
        id: Some(format!("o{i}")),
        patient: (!patient.is_empty()).then(|| patient.to_string()),
        outcome: "success".into(),
        ..AuditRecord::default()
    }
}

fn trail(store: &dyn socle_store::Store, patient: &str, limit: i64) -> Vec<i64> {
    let mut seqs = Vec::new();
    store
        .read_log(&mut |c| {
            seqs = audit::recent(c, Some(patient), limit, true)?
                .iter()
                .map(|a| a.seq)
                .collect();
            Ok(())
        })
        .expect("lecture du journal");
    seqs
}

#[test]
fn trails_are_whole_before_during_and_after_indexing() {
    let dir = tempfile::tempdir().expect("répertoire temporaire");
    let store = socle_store::open(None, dir.path()).expect("ouverture");
    assert!(store.separate_log());
    assert!(dir.path().join("socle-audit.db").exists());
    // 1,000 records over 7 patients (and some without a patient), in three batches.
    let patients = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", ""];
    let all: Vec<AuditRecord> = (1..=1000)
        .map(|i| {
            record(
                i,
                patients[(i as usize * 7 + i as usize / 3) % patients.len()],
            )
        })
        .collect();
    for chunk in all.chunks(400) {
        store
            .write_log(&mut |c| audit::append(c, chunk))
            .expect("écriture");
    }
    let expected = |p: &str, limit: usize| -> Vec<i64> {
        let mut v: Vec<i64> = all
            .iter()
            .enumerate()
            .filter(|(_, r)| r.patient.as_deref() == Some(p))
            .map(|(i, _)| i as i64 + 1)
            .collect();
        v.reverse();
        v.truncate(limit);
        v
    };
    let check = |when: &str| {
        for p in &patients[..7] {
            for limit in [1, 10, 200] {
                assert_eq!(
                    trail(store.as_ref(), p, limit as i64),
                    expected(p, limit),
                    "{when} : {p}, {limit}"
                );
            }
        }
    };
    check("rien d'indexé");
    let mut covered = 0;
    store
        .write_log(&mut |c| {
            covered = audit::index_log(c, 333)?;
            Ok(())
        })
        .expect("indexation");
    assert_eq!(covered, 333);
    check("en partie indexé");
    while covered > 0 {
        store
            .write_log(&mut |c| {
                covered = audit::index_log(c, 300)?;
                Ok(())
            })
            .expect("indexation");
    }
    check("tout indexé");
    let mut pending = -1;
    store
        .read_log(&mut |c| {
            pending = audit::log_pending(c)?;
            Ok(())
        })
        .expect("lecture");
    assert_eq!(pending, 0);
    // The chain stays whole (the patient index is no part of it).
    store
        .read_log(&mut |c| {
            let v = audit::verify(c)?;
            assert_eq!((v.records, v.problems.len()), (1000, 0), "{:?}", v.problems);
            Ok(())
        })
        .expect("vérification");
}
