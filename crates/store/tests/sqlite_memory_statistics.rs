//! SQLite's memory statistics are off in a Socle process (each allocation SQLite made took a process-wide mutex
//! to count it). Its own test binary: the setting only applies before SQLite's first connection in the process.

#[test]
fn sqlite_counts_no_memory_once_a_store_is_open() {
    let dir = tempfile::tempdir().expect("répertoire");
    let s = socle_store::open(None, dir.path()).expect("ouverture");
    s.write(&mut |c| {
        c.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)", &[])?;
        for k in 0..100_i64 {
            c.execute(
                "INSERT INTO t (k, v) VALUES (?, ?)",
                &[k.into(), "x".repeat(500).into()],
            )?;
        }
        Ok(())
    })
    .expect("écriture");
    // With the statistics on, SQLite counts the page caches, schemas and statements of the connections just
    // used: hundreds of kilobytes. Off, the counter is never updated.
    // SAFETY: a plain read of SQLite's counter, no argument.
    let used = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    assert_eq!(
        used, 0,
        "statistiques mémoire de SQLite actives : {used} octets comptés"
    );
}
