//! A SQLite database written with the first versions layout (`resource_versions` keyed by `(rid, version,
//! pkey)`, `WITHOUT ROWID`) is moved to the row-id layout at the next open: every version is kept, reads,
//! history and searches answer as before, and writes continue.

use serde_json::json;
use socle_store::repo::HistoryScope;
use socle_store::{Repository, RequestContext};

fn text(store: &dyn socle_store::Store, sql: &str) -> String {
    let mut out = String::new();
    store
        .read(&mut |c| {
            out = c
                .query_one(sql, &[])?
                .and_then(|r| r.into_iter().next())
                .and_then(|v| v.into_string())
                .unwrap_or_default();
            Ok(())
        })
        .expect("lecture");
    out
}

fn ctx() -> RequestContext {
    RequestContext {
        principal: "test".into(),
        client: None,
        base_url: "http://localhost/fhir".into(),
    }
}

fn family(repo: &Repository, id: &str) -> String {
    let s = repo.read(&ctx(), "Patient", id).expect("lecture");
    let v: serde_json::Value = serde_json::from_slice(&s.content).expect("JSON");
    v["name"][0]["family"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn first_layout_is_moved_at_open() {
    let dir = tempfile::tempdir().expect("répertoire temporaire");
    let ctx = ctx();
    {
        let store = socle_store::open(None, dir.path()).expect("ouverture");
        let repo = Repository::new(store.clone());
        for (id, name) in [("a", "Dupont"), ("b", "Martin"), ("c", "Durand")] {
            repo.update(
                &ctx,
                "Patient",
                id,
                json!({"resourceType": "Patient", "id": id, "name": [{"family": name}],
                       "text": {"status": "generated", "div": format!("<div>{}</div>", "x".repeat(3000))}}),
                None,
            )
            .expect("écriture");
        }
        // A second version of `b`.
        repo.update(
            &ctx,
            "Patient",
            "b",
            json!({"resourceType": "Patient", "id": "b", "name": [{"family": "Martin-Petit"}]}),
            None,
        )
        .expect("mise à jour");
        // Back to the first layout, as a database written before this change has it.
        store
            .write(&mut |c| {
                for sql in [
                    "CREATE TABLE v1 (pkey TEXT NOT NULL, rid BIGINT NOT NULL, version BIGINT NOT NULL, \
                     rtype TEXT NOT NULL, id TEXT NOT NULL, seq BIGINT NOT NULL, last_updated BIGINT NOT NULL, \
                     method TEXT NOT NULL, content BLOB NOT NULL, PRIMARY KEY (rid, version, pkey)) WITHOUT ROWID",
                    "INSERT INTO v1 SELECT pkey, rid, version, rtype, id, seq, last_updated, method, content \
                     FROM resource_versions",
                    "DROP TABLE resource_versions",
                    "ALTER TABLE v1 RENAME TO resource_versions",
                    "CREATE INDEX resource_versions_seq ON resource_versions (seq)",
                    "CREATE INDEX resource_versions_type_seq ON resource_versions (rtype, seq)",
                ] {
                    c.execute(sql, &[])?;
                }
                Ok(())
            })
            .expect("ancienne disposition");
        assert!(
            text(
                store.as_ref(),
                "SELECT sql FROM sqlite_master WHERE name = 'resource_versions'"
            )
            .contains("WITHOUT ROWID")
        );
    }
    let store = socle_store::open(None, dir.path()).expect("réouverture");
    let sql = text(
        store.as_ref(),
        "SELECT sql FROM sqlite_master WHERE name = 'resource_versions'",
    );
    assert!(sql.contains("seq INTEGER PRIMARY KEY"), "{sql}");
    assert_eq!(
        text(
            store.as_ref(),
            "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master \
             WHERE tbl_name LIKE 'resource_versions%' AND type = 'index' ORDER BY name)"
        ),
        "resource_versions_key,resource_versions_type_seq"
    );
    let repo = Repository::new(store.clone());
    assert_eq!(family(&repo, "a"), "Dupont");
    assert_eq!(family(&repo, "b"), "Martin-Petit");
    let v1 = repo.vread(&ctx, "Patient", "b", "1").expect("version 1");
    let v1: serde_json::Value = serde_json::from_slice(&v1.content).expect("JSON");
    assert_eq!(v1["name"][0]["family"], "Martin");
    let history = repo
        .history(&ctx, HistoryScope::Instance("Patient", "b"), &[])
        .expect("historique");
    assert_eq!(history.entries.len(), 2);
    let system = repo
        .history(&ctx, HistoryScope::System, &[])
        .expect("historique du système");
    assert_eq!(system.entries.len(), 4);
    // Writing goes on, with versions numbered after the moved ones.
    repo.update(
        &ctx,
        "Patient",
        "c",
        json!({"resourceType": "Patient", "id": "c", "name": [{"family": "Durand-Roy"}]}),
        None,
    )
    .expect("écriture après réorganisation");
    assert_eq!(family(&repo, "c"), "Durand-Roy");
    let page = repo
        .search(
            &ctx,
            "Patient",
            &[("family".to_string(), "durand".to_string())],
            true,
        )
        .expect("recherche");
    assert_eq!(page.matches.len(), 1);
}
