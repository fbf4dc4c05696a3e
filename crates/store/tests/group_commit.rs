//! SQLite group commit: writers share a transaction; one writer's failure rolls the group back and its other
//! writers run again (or, shortly after such a failure, the failing writer is undone alone by its SAVEPOINT).
//! Either way every acknowledged write is there exactly once, and no failed write left anything.

use socle_store::{Store, StoreError};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn store(dir: &std::path::Path) -> Arc<dyn Store> {
    let s = socle_store::open(None, dir).expect("ouverture");
    s.write(&mut |c| {
        c.execute(
            "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, who TEXT NOT NULL)",
            &[],
        )?;
        Ok(())
    })
    .expect("table");
    s
}

fn insert(c: &mut dyn socle_store::sql::SqlConn, k: i64, who: &str) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO t (k, who) VALUES (?, ?)",
        &[k.into(), who.into()],
    )?;
    Ok(())
}

fn rows(s: &dyn Store) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    s.read(&mut |c| {
        out = c
            .query("SELECT k, who FROM t ORDER BY k", &[])?
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter();
                let k = it.next().and_then(|v| v.as_i64()).unwrap_or(-1);
                let who = it.next().and_then(|v| v.into_string()).unwrap_or_default();
                (k, who)
            })
            .collect();
        Ok(())
    })
    .expect("lecture");
    out
}

/// `slow` opens a group and is still in its body when `failing` queues for the writer: `failing` joins the
/// group, fails, and `slow` runs again — unless joiners are under SAVEPOINTs (`slow` then runs once).
fn slow_then_failing(s: &Arc<dyn Store>, k: i64) -> usize {
    let runs = Arc::new(AtomicUsize::new(0));
    let (s1, r1) = (s.clone(), runs.clone());
    let slow = std::thread::spawn(move || {
        s1.write(&mut |c| {
            r1.fetch_add(1, Ordering::SeqCst);
            insert(c, k, "lent")?;
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        })
    });
    std::thread::sleep(Duration::from_millis(80));
    let failing = s.write(&mut |c| {
        insert(c, k + 1, "refusé")?;
        Err(StoreError::Rollback)
    });
    assert!(matches!(failing, Err(StoreError::Rollback)), "{failing:?}");
    slow.join().expect("fil").expect("écriture lente validée");
    runs.load(Ordering::SeqCst)
}

#[test]
fn a_failing_joiner_undoes_the_group_and_the_others_run_again() {
    let dir = tempfile::tempdir().expect("répertoire temporaire");
    let s = store(dir.path());
    // The group is rolled back and the slow writer's body runs a second time.
    assert_eq!(slow_then_failing(&s, 10), 2);
    // Within seconds of that failure, joiners run under a SAVEPOINT: the slow writer runs once.
    assert_eq!(slow_then_failing(&s, 20), 1);
    assert_eq!(
        rows(s.as_ref()),
        vec![(10, "lent".to_string()), (20, "lent".to_string())]
    );
}

#[test]
fn under_concurrent_writers_and_failures_each_acknowledged_write_is_there_once() {
    let dir = tempfile::tempdir().expect("répertoire temporaire");
    let s = store(dir.path());
    let threads: Vec<_> = (0..12)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                for i in 0..60 {
                    let k = t * 1000 + i;
                    let fail = (t + i) % 9 == 0;
                    let res = s.write(&mut |c| {
                        insert(c, k, &format!("fil {t}"))?;
                        if i % 4 == 0 {
                            std::thread::sleep(Duration::from_micros(300));
                        }
                        if fail {
                            return Err(StoreError::Rollback);
                        }
                        Ok(())
                    });
                    match (fail, res) {
                        (false, Ok(())) => ok.push((k, format!("fil {t}"))),
                        (true, Err(StoreError::Rollback)) => {}
                        (f, r) => panic!("écriture {k} (échec voulu : {f}) : {r:?}"),
                    }
                }
                ok
            })
        })
        .collect();
    let mut expected: Vec<(i64, String)> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("fil"))
        .collect();
    expected.sort();
    assert_eq!(rows(s.as_ref()), expected);
    // And durably: the same after reopening the file.
    drop(s);
    let s = store(dir.path());
    assert_eq!(rows(s.as_ref()), expected);
}
